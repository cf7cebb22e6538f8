"""mmseg-compatible ``tools/train.py``: the same arguments, run by ``seglab train``."""

import sys

from seglab.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], whole_process=True))
