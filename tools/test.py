"""mmseg-compatible ``tools/test.py``: the same arguments, run by ``seglab test``."""

import sys

from seglab.cli import main

if __name__ == "__main__":
    sys.exit(main(["test", *sys.argv[1:]], whole_process=True))
