"""The `svdq` command line (and, later, the Python SDK)."""
