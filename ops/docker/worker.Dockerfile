# A GPU worker: CUDA runtime, torch with CUDA, one worker process per GPU, non-root.
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HOME=/models/hf
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3-pip \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api ./api
COPY models ./models
COPY worker ./worker
COPY client ./client
RUN python3.11 -m pip install --index-url https://download.pytorch.org/whl/cu124 "torch>=2.3" \
    && python3.11 -m pip install .
RUN useradd --create-home --uid 10001 svdq && mkdir -p /models && chown svdq /models
USER svdq
HEALTHCHECK --interval=30s --timeout=10s CMD celery -b "$SVDQ_REDIS_URL" inspect ping -d "$(hostname)" >/dev/null 2>&1 || exit 1
CMD ["svdq", "worker", "--model", "svd-xt", "--gpu", "0"]
