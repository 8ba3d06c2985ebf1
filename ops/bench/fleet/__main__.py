"""`python -m ops.bench.fleet`: runs the fleet simulation's command line (run.main) and exits with its status."""

import sys

from .run import main

if __name__ == "__main__":
    sys.exit(main())
