"""`python -m ops.bench.lifecycle`: runs the benchmark's command line (run.main) and exits with its status."""

import sys

from .run import main

if __name__ == "__main__":
    sys.exit(main())
