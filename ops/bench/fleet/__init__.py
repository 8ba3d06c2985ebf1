"""Simulate a fleet of GPU workers against the real control plane, and find the fleet size where it breaks.

One command starts a private stack on loopback (its own redis-server, a throwaway PostgreSQL database, the API as
a real `svdq api` subprocess), then for each fleet size N runs N simulated SVD-XT workers, with clients submitting
and polling over HTTP, prints a Markdown table and removes everything it made:

    .venv/bin/python -m ops.bench.fleet                     # N = 10, 100, 1000, 5000 (about 6 minutes)
    .venv/bin/python -m ops.bench.fleet --sizes 50,200,500  # other sizes
    .venv/bin/python -m ops.bench.fleet --quick             # tiny sizes, short windows: the test suite's mode
    .venv/bin/python -m ops.bench.fleet --json out.json     # also write the numbers as JSON

What is real: the API, PostgreSQL, Redis and the broker messages, and every control-plane call a worker makes,
made by the worker's own code: claim (worker/render.py's claim path), progress (worker.monitor.JobMonitor: the
live ProgressEvent on pub/sub, the row written at most every progress_interval_s), lease renewal every
lease_s / 4, finish_job with a result row, then models.lifecycle.job_ended (with its webhook event row: every job
has a webhook URL, which nothing delivers), the heartbeat, and the maintenance pass
(worker.maintenance.Maintenance.run_once, timed), run by every worker every maintenance_interval_s as real
workers do. What is not: the render (a wait: render_s, 12 s by default, a denoising step every render_s / 25),
reading the image, encoding, uploading, Celery's task events, the webhook sender.

Job ids come from the real broker queue: a kombu consumer takes the API's Celery messages from `render.svd-xt`
(no real worker listens to that model here), at most as many unacknowledged as it has workers (a real worker
prefetches one), each acknowledged after its job ended. Jobs are submitted at the fleet's capacity, N / render_s
per second, so the queue neither drains nor grows; every job in flight is polled once a second (GET
/v1/jobs/{id}); the numbers are taken over a steady window (30 s) after a warm-up of render_s + 8 s.

Three processes of this benchmark share the machine with the system it measures: the simulator (this one: most
of the fleet), the canary (50 of each size's workers, in a process of its own so that their claim latencies are
not queued behind the simulator's GIL) and the clients (the HTTP submitters and pollers, likewise). In the
simulator, each worker is a few chains on a heap of next-action times (main: claim, steps, finish; lease;
heartbeat; maintenance), and a scheduler thread hands due actions to a bounded pool of 16 threads (and as many
database connections) where the blocking calls run. The limits: one Python process runs about one core of Python
at a time, and a simulated worker costs it a few milliseconds of CPU per second (what a real worker's
control-plane calls cost, a whole fleet's of them in one process); past a few hundred workers on two cores the
simulator falls behind, and the table says so (its CPU, and how late its actions started), as it says when the
canary or the clients did.

Its modules: `plan.py` (options, the full and quick presets, the stack's settings), `samples.py` (what the window
records), `scheduler.py` (the heap and the pool), `broker.py` (the kombu consumer), `workers.py` (one simulated
worker: its context and control-plane calls), `fleet.py` (N workers, message hand-out, maintenance), `side.py`
(the side processes' protocol), `canary.py` and `clients.py` (the two side processes: a share of the fleet, and
the submitters and pollers over HTTP), `probes.py` (PostgreSQL, Redis and CPU measurements), `size.py` (one size,
run), `rows.py` (its numbers), `verdict.py` (targets, saturation, the first break), `report.py` (the table) and
`run.py` (the command line; `__main__.py` runs it).
"""
