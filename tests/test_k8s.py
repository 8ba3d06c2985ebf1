"""Every overlay under ops/k8s/overlays renders with `kubectl kustomize` (offline), and what it renders is
a consistent deployment: well-formed objects, one GPU per worker pod, a kill grace above the worker's
shutdown grace, KEDA counting every Redis list kombu fills for the model's queue, selectors and
references that resolve. No cluster needed; kubectl missing skips locally and fails with CI=true."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlparse

import pytest
import redis as redis_lib
import yaml
from kombu.transport.redis import Channel

from models.queue import broker_priority, create_celery, make_enqueue, queue_name
from models.registry import REGISTRY
from models.settings import Settings
from ops.harness import ROOT
from ops.harness.services import redis_server, unavailable

K8S = ROOT / "ops" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
# every kind the overlays may use, at the API version current clusters serve (a typo or a removed
# version such as policy/v1beta1 fails here instead of at `kubectl apply`)
KNOWN = {("v1", "Namespace"), ("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Service"),
         ("v1", "PersistentVolumeClaim"), ("apps/v1", "Deployment"), ("batch/v1", "Job"),
         ("autoscaling/v2", "HorizontalPodAutoscaler"), ("policy/v1", "PodDisruptionBudget"),
         ("keda.sh/v1alpha1", "ScaledObject")}
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# after SVDQ_SHUTDOWN_GRACE_S a render that finished denoising still decodes, encodes and uploads
AFTER_GRACE_S = 60


@functools.cache
def _render(overlay: str) -> list[dict[str, Any]]:
    res = subprocess.run(["kubectl", "kustomize", str(K8S / "overlays" / overlay)], capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    return [doc for doc in yaml.safe_load_all(res.stdout) if doc]


def rendered(overlay: str) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        unavailable("kubectl is not installed (it renders the kustomize overlays)")
    return _render(overlay)


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]


def workers(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n: d for n, d in of_kind(docs, "Deployment").items()
            if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"}


def config_data(docs: list[dict[str, Any]]) -> dict[str, str]:
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("svdq-config")]
    data: dict[str, str] = cm["data"]
    return data


def kombu_lists(queue: str) -> set[str]:
    """The Redis lists kombu's own code puts a message of each API priority (0-9) in, with the
    transport options svdq's Celery app really uses."""
    opts = create_celery(Settings(env="dev", redis_url="redis://unused:6379/0")).conf.broker_transport_options
    kombu: Any = Channel  # untyped; its two methods only read sep, priority_steps and priority
    chan = SimpleNamespace(sep=opts["sep"], priority_steps=opts["priority_steps"])
    chan.priority = lambda n: kombu.priority(chan, n)
    return {kombu._q_for_pri(chan, queue, broker_priority(p)) for p in range(10)}


def test_there_are_a_single_gpu_and_a_fleet_overlay() -> None:
    assert {"single-gpu", "fleet"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_a_well_formed_kubernetes_object(overlay: str) -> None:
    docs = rendered(overlay)
    seen = set()
    for d in docs:
        assert (d.get("apiVersion"), d.get("kind")) in KNOWN, (d.get("apiVersion"), d.get("kind"))
        name = d["metadata"]["name"]
        assert DNS_SUBDOMAIN.match(name) and len(name) <= 253, name
        if d["kind"] in ("Service", "Deployment"):
            assert DNS_LABEL.match(name) and len(name) <= 63, name
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == "svdq", name
        assert (d["kind"], name) not in seen
        seen.add((d["kind"], name))
    for name, spec in pod_specs(docs):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for c in spec["containers"]:
            assert c["image"] and c["resources"]["requests"], name
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            ports = {p["name"] for p in c.get("ports", [])}
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                port = c.get(probe, {}).get("httpGet", {}).get("port")
                assert port is None or isinstance(port, int) or port in ports, (name, probe, port)
    for name, dep in of_kind(docs, "Deployment").items():
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_worker_deployment_renders_its_model_on_exactly_one_gpu(overlay: str) -> None:
    docs = rendered(overlay)
    assert workers(docs)
    for name, dep in workers(docs).items():
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        model = dep["spec"]["template"]["metadata"]["labels"]["svdq.io/model"]
        assert model in REGISTRY and name == f"svdq-worker-{model}"
        assert c["command"][:2] == ["svdq", "worker"] and c["command"][c["command"].index("--model") + 1] == model
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert c["resources"]["requests"].get("nvidia.com/gpu", 1) == 1
        assert "replicas" not in dep["spec"], "the ScaledObject owns a worker Deployment's replica count"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_kill_grace_outlasts_the_shutdown_grace(overlay: str) -> None:
    docs = rendered(overlay)
    grace = float(config_data(docs).get("SVDQ_SHUTDOWN_GRACE_S", Settings(env="dev").shutdown_grace_s))
    for name, dep in workers(docs).items():
        assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace + AFTER_GRACE_S, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_scaled_object_sums_every_priority_list_of_its_models_queue(overlay: str) -> None:
    docs = rendered(overlay)
    deployments = of_kind(docs, "Deployment")
    scaled = of_kind(docs, "ScaledObject")
    assert {so["spec"]["scaleTargetRef"]["name"] for so in scaled.values()} == set(workers(docs))
    cfg = config_data(docs)
    redis_url = urlparse(cfg["SVDQ_REDIS_URL"])
    for name, so in scaled.items():
        target = deployments[so["spec"]["scaleTargetRef"]["name"]]
        model = target["spec"]["template"]["metadata"]["labels"]["svdq.io/model"]
        triggers = so["spec"]["triggers"]
        assert {t["type"] for t in triggers} == {"redis"}
        assert {t["metadata"]["listName"] for t in triggers} == kombu_lists(queue_name(model)), name
        assert len(triggers) == len(kombu_lists(queue_name(model)))
        # the HPA alone would take the largest trigger; the formula must add all of them
        terms = set(re.findall(r"[A-Za-z_]\w*", so["spec"]["advanced"]["scalingModifiers"]["formula"]))
        assert terms == {t["name"] for t in triggers} and "+" in so["spec"]["advanced"]["scalingModifiers"]["formula"]
        (c,) = target["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in c.get("env", [])}
        for t in triggers:
            meta = t["metadata"]
            # KEDA reads the address from the target container's env: the same Redis the workers use
            ref = env[meta["addressFromEnv"]]["valueFrom"]["configMapKeyRef"]
            assert cfg[ref["key"]] == f"{redis_url.hostname}:{redis_url.port or 6379}"
            assert meta["databaseIndex"] == (redis_url.path.strip("/") or "0")
            assert int(meta["listLength"]) == 1  # one job per pod: a worker renders one at a time
        assert 0 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_of_services_pdbs_and_autoscalers_reach_pods(overlay: str) -> None:
    docs = rendered(overlay)
    deployments = of_kind(docs, "Deployment")
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in deployments.values()]

    def matches(selector: dict[str, str]) -> bool:
        return any(selector.items() <= labels.items() for labels in pods)

    for name, pdb in of_kind(docs, "PodDisruptionBudget").items():
        assert matches(pdb["spec"]["selector"]["matchLabels"]), name
    for name, svc in of_kind(docs, "Service").items():
        assert matches(svc["spec"]["selector"]), name
        (dep,) = [d for d in deployments.values()
                  if svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        ports = {p["name"] for c in dep["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports, name
    for name, hpa in of_kind(docs, "HorizontalPodAutoscaler").items():
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments, name
    for workers_pdb in (p for n, p in of_kind(docs, "PodDisruptionBudget").items() if "worker" in n):
        # minAvailable would block every node drain once KEDA has scaled a model to one pod or none
        assert "minAvailable" not in workers_pdb["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_env_reference_resolves_to_a_key_of_the_configmap_or_secret(overlay: str) -> None:
    docs = rendered(overlay)
    data = {(d["kind"], d["metadata"]["name"]): set(d.get("data", {})) | set(d.get("stringData", {}))
            for d in docs if d["kind"] in ("ConfigMap", "Secret")}
    claims = set(of_kind(docs, "PersistentVolumeClaim"))
    for name, spec in pod_specs(docs):
        for c in spec["containers"]:
            for src in c.get("envFrom", []):
                kind = "ConfigMap" if "configMapRef" in src else "Secret"
                ref = src["configMapRef"] if kind == "ConfigMap" else src["secretRef"]
                assert (kind, ref["name"]) in data, (name, ref)
            for e in c.get("env", []):
                for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    ref = e.get("valueFrom", {}).get(key)
                    if ref:
                        assert ref["key"] in data[(kind, ref["name"])], (name, e["name"])
        for vol in spec.get("volumes", []):
            if "persistentVolumeClaim" in vol:
                assert vol["persistentVolumeClaim"]["claimName"] in claims, (name, vol)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_svdq_variable_in_the_configmap_and_secret_is_a_setting(overlay: str) -> None:
    """A misspelt SVDQ_ variable is silently ignored by the settings loader: catch it here."""
    fields = {"SVDQ_" + name.upper() for name in Settings.model_fields}
    for d in rendered(overlay):
        if d["kind"] in ("ConfigMap", "Secret"):
            for key in d.get("data", {}):
                assert not key.startswith("SVDQ_") or key in fields, key


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_probes_use_healthz_so_outages_answer_503(overlay: str) -> None:
    (c,) = of_kind(rendered(overlay), "Deployment")["svdq-api"]["spec"]["template"]["spec"]["containers"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # not /readyz: an outage of a shared service must give clients 503s, not an empty Service
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"


def test_the_lists_keda_counts_are_the_lists_a_real_redis_holds_after_enqueueing() -> None:
    """Enqueue one job of each API priority through svdq's own Celery app into a private redis-server:
    the lists that fill are exactly those kombu_lists() names (and so the ScaledObjects count)."""
    with redis_server() as url:
        app = create_celery(Settings(env="dev", redis_url=url + "/0"))
        enqueue = make_enqueue(app)
        for priority in range(10):
            enqueue(f"job_{priority}", "svd-xt", priority, 0.0)
        client: Any = redis_lib.Redis.from_url(url + "/0")
        lengths = {k.decode(): client.llen(k) for k in client.keys("*") if client.type(k) == b"list"}
        app.close()
    assert set(lengths) == kombu_lists(queue_name("svd-xt"))
    assert sorted(lengths.values()) == [1] * 10  # each priority in a list of its own
