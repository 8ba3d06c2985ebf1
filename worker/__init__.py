"""GPU-pinned Celery workers: each owns one loaded SVD pipeline and renders jobs warm."""
