#!/bin/sh
# The serving container's two steps, also run by the test suite in a fresh virtual environment
# (tests/test_deploy.py), so what the image would run is what the suite proves:
#   deploy/serve.sh install   pip install capforge with the serve extra only (no TensorFlow)
#   deploy/serve.sh start     serve every exported workspace under $CAPFORGE_WORKS
# PYTHON picks the interpreter; CAPFORGE_SOURCE the capforge folder (default: this repository).
set -eu
PYTHON=${PYTHON:-python3}
HERE=$(cd "$(dirname "$0")/.." && pwd)
case "${1:-}" in
  install)
    exec "$PYTHON" -m pip install --quiet "${CAPFORGE_SOURCE:-$HERE}[serve]"
    ;;
  start)
    # Any address but loopback needs API keys: CAPFORGE_API_KEY, NAME:KEY pairs or one key (the
    # server refuses otherwise); CAPFORGE_RATE_LIMIT: API requests a second per key.
    exec "$PYTHON" -m capforge serve "${CAPFORGE_WORKS:-/works}" --host "${CAPFORGE_HOST:-0.0.0.0}" \
      --port "${CAPFORGE_PORT:-7860}" ${CAPFORGE_WORKERS:+--workers "$CAPFORGE_WORKERS"} \
      ${CAPFORGE_RATE_LIMIT:+--rate-limit "$CAPFORGE_RATE_LIMIT"}
    ;;
  *)
    echo "usage: deploy/serve.sh install | start" >&2
    exit 2
    ;;
esac
