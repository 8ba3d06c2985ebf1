# The API image (also runs migrations, key commands and Flower): no torch, no diffusers, non-root.
# Build from the repository root: docker build -f ops/docker/api.Dockerfile -t svdq-api .
FROM python:3.11.13-slim-bookworm
# the core and these extras of pyproject.toml, never the worker's render stack (tests/test_dockerfiles.py
# proves the image runs without it)
ARG EXTRAS="server flower"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
# dependencies first, so code edits do not reinstall them; pyproject.toml stays the one list of them
RUN python -c "import os, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
deps = p['dependencies'] + [d for e in os.environ['EXTRAS'].split() for d in p['optional-dependencies'][e]]; \
print('\\n'.join(d for d in deps if not d.startswith('svdq[')))" \
    > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt
COPY api ./api
COPY models ./models
COPY worker ./worker
COPY client ./client
RUN pip install --no-cache-dir --no-deps . \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin svdq
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["svdq", "api", "--host", "0.0.0.0", "--port", "8000"]
