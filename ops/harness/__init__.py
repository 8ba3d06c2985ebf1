"""The one harness the tests, the chaos run and the benchmarks share, outside the user package:

- `services`: which outside services this machine has (a missing one skips a test locally, fails it with
  CI=true), a private redis-server, moto's S3 server;
- `databases`: throwaway PostgreSQL databases;
- `processes`: child processes with their own logs and sessions, started, signalled and stopped together;
- `proxy`: a TCP forwarder that can cut every connection (a database outage, as its clients see it);
- `machine`: what machine a run is on;
- `images`: the sample image;
- `webhooks`: a local webhook receiver;
- `hub`: a stand-in Hugging Face hub serving repositories from memory (`svdq models pull` without the internet);
- `stack`: a whole svdq system (API, workers, migrated database, storage) on loopback.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository: children start here
