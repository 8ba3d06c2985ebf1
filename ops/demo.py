"""`make demo`: start the dev stack on embedded defaults, render the sample image with the `tiny` model,
show progress until it is done, write out/demo.mp4, print the job and where Flower was, stop the stack."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import imageio_ffmpeg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from client.procs import free_port  # noqa: E402

SAMPLE = ROOT / "ops" / "samples" / "rocket.jpg"
OUT = ROOT / "out" / "demo.mp4"


def wait_ready(client: httpx.Client, deadline: float, dev: subprocess.Popen[bytes]) -> None:
    while time.monotonic() < deadline:
        if dev.poll() is not None:
            raise SystemExit(f"svdq dev exited with code {dev.returncode}")
        try:
            if client.get("/readyz").status_code == 200:
                models = {m["name"]: m for m in client.get("/v1/models").json()}
                if models["tiny"]["workers_ready"] >= 1:
                    return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit("the dev stack did not become ready in time")


def show_progress(job: dict) -> None:  # type: ignore[type-arg]
    p = job["progress"]
    bar = "#" * round(30 * p["fraction"])
    print(f"\r  {job['status']:<9} [{bar:<30}] {p['step']}/{p['total']} {p.get('stage') or '':<10}",
          end="", flush=True)


def main() -> int:
    port, flower_port = free_port(), free_port()
    key = "svdq_demo_" + secrets.token_urlsafe(16)
    env = {**os.environ, "SVDQ_BOOTSTRAP_API_KEY": key, "HF_HUB_OFFLINE": "1"}
    env.pop("SVDQ_REDIS_URL", None)  # the dev stack starts its own redis-server
    print(f"starting the dev stack (API :{port}, Flower :{flower_port}) ...", flush=True)
    dev = subprocess.Popen([sys.executable, "-m", "client.cli", "dev", "--port", str(port),
                            "--flower-port", str(flower_port)], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"},
                          timeout=30) as client:
            wait_ready(client, time.monotonic() + 300, dev)
            with SAMPLE.open("rb") as fh:
                r = client.post("/v1/jobs", files={"image": (SAMPLE.name, fh, "image/jpeg")},
                                data={"spec": json.dumps({"model": "tiny", "params": {"seed": 42}})})
            r.raise_for_status()
            job = r.json()
            print(f"submitted {job['id']} ({SAMPLE.name}, model tiny, seed 42)")
            while job["status"] in ("queued", "running"):
                show_progress(job)
                time.sleep(0.25)
                job = client.get(f"/v1/jobs/{job['id']}").json()
            show_progress(job)
            print()
            if job["status"] != "succeeded":
                print(json.dumps(job, indent=2))
                return 1
            OUT.parent.mkdir(exist_ok=True)
            video = client.get(f"/v1/jobs/{job['id']}/video", follow_redirects=True)
            video.raise_for_status()
            OUT.write_bytes(video.content)
            gen = imageio_ffmpeg.read_frames(str(OUT))
            meta = gen.__next__()
            frames = sum(1 for _ in gen)
            print(json.dumps(job, indent=2))
            print(f"wrote {OUT.relative_to(ROOT)}: {frames} frames, {meta['size'][0]}x{meta['size'][1]}, "
                  f"{meta['fps']:g} fps")
            print(f"Flower was at http://127.0.0.1:{flower_port}")
            expected = (job["result"]["frames"], job["result"]["width"], job["result"]["height"])
            return 0 if (frames, *meta["size"]) == expected else 1
    finally:
        if dev.poll() is None:
            dev.send_signal(signal.SIGINT)
            try:
                dev.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(dev.pid, signal.SIGKILL)
        print("dev stack stopped")


if __name__ == "__main__":
    sys.exit(main())
