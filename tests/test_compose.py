"""docker-compose.yml cannot run here (no Docker engine); check what can be checked: it parses, every
service is wired to the same settings, and every file it builds from exists."""

from __future__ import annotations

import yaml

from tests.stack import ROOT


def test_compose_file_is_wired_consistently() -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    assert {"redis", "postgres", "minio", "minio-init", "migrate", "api", "worker-gpu0", "flower"} <= set(services)
    for name in ("migrate", "api", "worker-gpu0", "flower"):
        env = services[name]["environment"]
        assert env["SVDQ_REDIS_URL"] == "redis://redis:6379/0"
        assert env["SVDQ_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["SVDQ_STORAGE_URL"].startswith("s3://") and env["SVDQ_S3_ENDPOINT_URL"] == "http://minio:9000"
    for svc in services.values():
        build = svc.get("build")
        if build:
            assert (ROOT / build["dockerfile"]).is_file()
        for dep in svc.get("depends_on", {}):
            assert dep in services
    gpu = services["worker-gpu0"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"] and "--gpu" in services["worker-gpu0"]["command"]

