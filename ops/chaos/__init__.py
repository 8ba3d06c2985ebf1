"""Chaos run: many tiny jobs through a real stack while workers are SIGKILLed, Redis restarts empty and a
worker is asked to stop; then check that every job ended exactly once, with its result stored.

One command starts everything on loopback (its own redis-server, a throwaway PostgreSQL database, local file
storage in a temp dir, the API and the workers as `svdq` subprocesses), prints a Markdown report to stdout,
stops every process it started (the restarted ones too) and drops the database:

    .venv/bin/python -m ops.chaos                        # 200 jobs, 10 kills, 3 Redis wipes, 1 SIGTERM
    .venv/bin/python -m ops.chaos --jobs 20 --kills 2 --wipes 1 --workers 2   # a short run
    .venv/bin/python -m ops.chaos --json out.json        # also write the numbers as JSON

Faults are spread over the run by the fraction of jobs ended so far. A SIGKILL goes to a worker that is
rendering a job when there is one (that is the fault that matters), and a new `svdq worker` replaces it
at once; a Redis wipe kills redis-server and starts a new, empty one on the same port; a SIGTERM asks one
rendering worker to stop (it gets SVDQ_SHUTDOWN_GRACE_S, then hands its job back) and a replacement starts.

PASS needs: every job succeeded, none lost (still queued at the end), none stuck (running with an expired
lease at the end), none rendered to completion twice (counted from the `job <id> succeeded` lines of every
worker log), exactly two result objects per job (video.mp4, poster.jpg), and every fault actually done.
Exit status 0 on PASS, 1 on FAIL, 2 when the stack could not be started, 130 when interrupted.
Progress goes to stderr; stdout holds only the report.

Its modules, built on ops/harness (processes, scratch database, stack, webhook receiver, sample image):
`plan.py` (the options, the stack's reliability timings, the render params, the run's parts), `faults.py` (when
each fault comes, its victim, the SIGKILL, the Redis wipe, the SIGTERM), `evidence.py` (what the run reads back:
job rows, worker log lines, result objects), `report.py` (the checks, the table, the JSON) and `run.py` (the
command line and the run itself; `__main__.py` runs it).
"""
