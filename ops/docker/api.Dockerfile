# The API image: no torch (the API never imports it), non-root.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api ./api
COPY models ./models
COPY worker ./worker
COPY client ./client
# torch is a declared dependency of the package; the API image takes the small CPU wheel
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.3" && pip install .
RUN useradd --create-home --uid 10001 svdq
USER svdq
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz'); sys.exit(0)"
CMD ["svdq", "api", "--host", "0.0.0.0", "--port", "8000"]
