"""``python -m seglab``: the ``seglab`` command (for a venv whose scripts are not on PATH)."""

import sys

from seglab.cli import main

if __name__ == "__main__":
    sys.exit(main())
