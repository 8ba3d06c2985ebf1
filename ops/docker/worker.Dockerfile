# A GPU worker: CUDA runtime, torch with CUDA, one `svdq worker` process per GPU, non-root.
# Build from the repository root: docker build -f ops/docker/worker.Dockerfile -t svdq-worker .
# The torch wheel brings its own CUDA libraries; the host needs an NVIDIA driver that supports CUDA 12.8.
FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04
ARG TORCH_VERSION=2.13.0
# the torchvision release made for that torch (spandrel, the postprocess extra, imports it)
ARG TORCHVISION_VERSION=0.28.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH \
    HF_HOME=/models/hf SVDQ_CACHE_DIR=/models/svdq
# Ubuntu's python3 (3.12) from the security-updated archive: its patch version moves with the archive,
# so it is not pinned (that would break every rebuild after an update)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
WORKDIR /app
COPY pyproject.toml README.md ./
# torch and its torchvision first, from the CUDA index, so `pip install .` finds both satisfied and never
# pulls a CPU build or a torchvision made for another torch
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX" "torch==$TORCH_VERSION" \
    "torchvision==$TORCHVISION_VERSION"
COPY api ./api
COPY models ./models
COPY worker ./worker
COPY client ./client
# the worker and learned post-processing extras, with every declared dependency; the model cache is a
# mounted volume (/models) that the worker's user must be able to write
RUN pip install --no-cache-dir "/app[worker,postprocess]" \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin svdq \
    && mkdir -p /models/hf /models/svdq && chown -R 10001:10001 /models
USER 10001
VOLUME ["/models"]
EXPOSE 9101
# The exporter answers from its own thread, also mid-render (the solo pool cannot answer Celery's
# `inspect ping` then); it starts once the weights are loaded, which the long start period allows for.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30m --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9101/metrics', timeout=4)"]
# SIGTERM (docker stop, Kubernetes) is Celery's warm shutdown: the running render gets SVDQ_SHUTDOWN_GRACE_S
STOPSIGNAL SIGTERM
# the exporter listens on 9101 unless --metrics-port says otherwise (0 turns it off)
CMD ["svdq", "worker", "--model", "svd-xt", "--gpu", "0"]
