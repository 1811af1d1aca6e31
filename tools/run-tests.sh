#!/usr/bin/env bash
# The README's test command: installs what the tests need into .venv, then runs the whole suite.
# CI calls it through .ci/run. Extra arguments go to pytest (e.g. -k swap, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv" >&2
  "$python" -m venv .venv
fi
echo "== installing alpr-topo with its test extras and the paddle reader's (paddlepaddle: ~200 MB, a minute the first time)" >&2
.venv/bin/python -m pip install --quiet --upgrade pip "setuptools>=77" wheel
.venv/bin/python -m pip install --quiet -e ".[test,paddle]"
echo "== installing test services (a real RTSP server from Debian's GStreamer packages)" >&2
bash tools/rtsp_server.sh install || echo "!! RTSP server not installed: the RTSP reconnect tests will skip (see above)" >&2
echo "== installing Debian's chromium for the status page's browser tests (driven by Playwright, no browser download)" >&2
if ! command -v chromium >/dev/null 2>&1; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
    || echo "!! chromium not installed: tests/test_webui.py will fail (it needs /usr/bin/chromium)" >&2
fi
echo "== installing the backend services in the background: Kafka, PostgreSQL, MinIO, OpenSearch, schema registry" >&2
echo "   (alpr-topo services install, cached in \$ALPR_TOPO_SERVICES_DIR: about 8 minutes the first time, then a no-op;" >&2
echo "    log in tests/artifacts/services-install.log; the tests that need the servers run last and wait for it)" >&2
mkdir -p tests/artifacts
.venv/bin/alpr-topo services install >tests/artifacts/services-install.log 2>&1 &
installer=$!
echo "== running the tests" >&2
status=0
.venv/bin/python -m pytest -ra "$@" || status=$?
if ! wait "$installer"; then
  echo "!! alpr-topo services install failed; the end of tests/artifacts/services-install.log:" >&2
  tail -n 30 tests/artifacts/services-install.log >&2
  [ "$status" -ne 0 ] || status=1
fi
exit "$status"
