# Serving only: the exported models answer through onnxruntime; TensorFlow is not installed.
# Build and run: docker compose up -d (see docker-compose.yml); the works/ folder is a volume.
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 CAPFORGE_WORKS=/works CAPFORGE_PORT=7860
WORKDIR /opt/capforge
COPY pyproject.toml README.md ./
COPY capforge ./capforge
COPY deploy ./deploy
RUN PYTHON=python deploy/serve.sh install && useradd --create-home --uid 1000 capforge
USER capforge
VOLUME ["/works"]
EXPOSE 7860
# The API key comes from the environment: docker run -e CAPFORGE_API_KEY=... (required off loopback).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/healthz', timeout=4)"
CMD ["sh", "-c", "PYTHON=python exec deploy/serve.sh start"]
