"""What must never leak: keys, secrets and presigned URLs in logs; Flower without credentials outside dev."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from ops.harness import ROOT
from ops.harness.stack import API_KEY, Stack


def test_no_key_secret_or_presigned_url_appears_in_logs(pg_s3_stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    s = pg_s3_stack
    caplog.set_level(logging.DEBUG)
    secret = s.client.get("/v1/keys/self", headers=s.headers).json()["webhook_secret"]
    image = s.upload()
    done = s.wait(s.submit(image["id"], params={"num_inference_steps": 1, "num_frames": 2})["id"])
    assert "X-Amz-Signature" in done["result"]["video_url"]
    s.client.get("/v1/jobs", headers={"Authorization": "Bearer svdq_wrong_key_should_not_be_logged"})
    logs = caplog.text + "".join(s.worker_log(i) for i in range(len(s.workers)))
    for needle in (API_KEY, secret, "X-Amz-Signature", "svdq_wrong_key_should_not_be_logged"):
        assert needle not in logs


def test_flower_refuses_to_start_without_credentials_outside_dev() -> None:
    env = {**os.environ, "SVDQ_ENV": "prod", "SVDQ_REDIS_URL": "redis://127.0.0.1:1/0",
           "SVDQ_BOOTSTRAP_API_KEY": "svdq_" + "k" * 40}
    env.pop("SVDQ_FLOWER_BASIC_AUTH", None)
    env.pop("AWS_SECRET_ACCESS_KEY", None)  # the moto fixtures set a placeholder one
    r = subprocess.run([sys.executable, "-m", "client.cli", "flower"], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "SVDQ_FLOWER_BASIC_AUTH" in r.stderr
