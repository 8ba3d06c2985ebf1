"""Benchmark the job lifecycle around the renderer: the API's submit and status paths, the worker's overhead
around a render, and how both hold up with a deep queue.

One command starts a private stack on loopback (its own redis-server, a throwaway PostgreSQL database, local
file storage in a temp dir, the API as a real uvicorn subprocess, a tiny CPU worker for the end-to-end rows),
measures with an httpx.AsyncClient, prints a Markdown table to stdout, and removes everything it made:

    .venv/bin/python -m ops.bench.lifecycle                 # full counts (a few minutes on 2 cores)
    .venv/bin/python -m ops.bench.lifecycle --quick         # small counts, for the test suite
    .venv/bin/python -m ops.bench.lifecycle --json out.json # also write the numbers as JSON

Rows (targets from the lifecycle issue):
1. submit throughput: POST /v1/jobs req/s as a ratio of GET /healthz req/s, same server, same concurrency
   (model "svd-xt": no worker listens to its queue, so only the API is measured). Target >= 0.30.
2. status polling: GET /v1/jobs/{id} latency with many concurrent pollers, each its own client polling at a
   fixed interval (and the same pollers back-to-back, for the ceiling). Target p99 <= 25 ms. Then the API's CPU
   per GET under row 1's healthz load (its clients, back to back), over its CPU per healthz. Target <= 3x.
3. end-to-end overhead, tiny model, one job at a time: (finished_at - created_at) - (render_s + encode_s +
   upload_s). Target p50 <= 30 ms.
4. deep queue (model "svd"): submit p50 and GET p50 of a queued job with N jobs queued (inserted in bulk into
   the jobs table and the Redis queue index, as N submissions would leave them) over the same measured just
   before with the queue empty. Target <= 1.5x each.

Progress goes to stderr; stdout holds only the report. Nothing here asserts on speed.

Its modules, built on ops/harness (processes, scratch database, stack, sample image): `plan.py` (full and quick
counts, the models and params each row uses, the limits raised so nothing is refused), `load.py` (the load
drivers, their failure count and percentiles), `e2e.py` (one tiny job at a time, timed), `deep_queue.py` (the
bulk fill and the latency probe), `rows.py` (the four rows), `report.py` (the table and the versions) and
`run.py` (the command line; `__main__.py` runs it).
"""
