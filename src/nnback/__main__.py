"""Run the command line interface: ``python -m nnback train`` or ``python -m nnback predict``."""

from nnback.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
