#!/usr/bin/env bash
# A real RTSP server on 127.0.0.1 for development and the capture tests.
#
# It is GStreamer's RTSP server (Debian packages, driven by Debian's own python3 through
# PyGObject) serving a live H.264 test stream (videotestsrc -> x264enc -> RTP) at
# rtsp://127.0.0.1:PORT/cam. Its launcher, pid files and logs live in .services/rtsp/ (git-ignored).
#
#   tools/rtsp_server.sh install            # once: apt-get install the GStreamer packages (root or sudo)
#   tools/rtsp_server.sh check              # exit 0 when everything needed is installed
#   tools/rtsp_server.sh start [--port P]   # start in the background (default port 8554), wait until it listens
#   tools/rtsp_server.sh stop  [--port P]   # stop the one started on that port
#   tools/rtsp_server.sh status [--port P]
#
# Stream shape: RTSP_FPS (default 15) and RTSP_SIZE (default 320x240) in the environment of `start`.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=.services/rtsp
PY=${RTSP_PYTHON:-/usr/bin/python3}  # Debian's python3, which has the PyGObject bindings
# plugins-ugly: x264enc for the server; libav: avdec_h264, so tests can run source.video's CPU
# GStreamer templates (rtspsrc ... avdec_h264 ... appsink) against this server in Debian's GStreamer.
PACKAGES=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
          gstreamer1.0-plugins-ugly gstreamer1.0-libav)

cmd=${1:-}
shift || true
PORT=8554
while [ $# -gt 0 ]; do
  case "$1" in
    --port) PORT=$2; shift 2 ;;
    --port=*) PORT=${1#--port=}; shift ;;
    *) echo "rtsp_server.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

check() {
  [ -x "$PY" ] || { echo "missing $PY (Debian's python3)"; return 1; }
  "$PY" - <<'EOF'
import sys
try:
    import gi
    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import Gst, GstRtspServer  # noqa: F401
except Exception as exc:  # ImportError, ValueError from require_version
    print(f"GStreamer RTSP server bindings missing: {exc}")
    sys.exit(1)
Gst.init(None)
missing = [e for e in ("videotestsrc", "videoconvert", "x264enc", "rtph264pay") if Gst.ElementFactory.find(e) is None]
if missing:
    print("GStreamer elements missing: " + ", ".join(missing))
    sys.exit(1)
EOF
}

write_server() {
  mkdir -p "$DIR"
  cat > "$DIR/server.py" <<'EOF'
"""GStreamer RTSP server: a live H.264 test stream at rtsp://127.0.0.1:PORT/cam (written by tools/rtsp_server.sh)."""
import argparse
import signal

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, default=8554)
parser.add_argument("--fps", type=int, default=15)
parser.add_argument("--size", default="320x240")
args = parser.parse_args()
width, height = (int(v) for v in args.size.split("x"))

Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(str(args.port))
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate={args.fps}/1 "
    f"! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.fps} bitrate=400 "
    f"! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=1 )"
)
factory.set_shared(True)
server.get_mount_points().add_factory("/cam", factory)
if server.attach(None) == 0:
    raise SystemExit(f"cannot listen on 127.0.0.1:{args.port}")
loop = GLib.MainLoop()
for sig in (signal.SIGTERM, signal.SIGINT):
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
print(f"serving rtsp://127.0.0.1:{args.port}/cam", flush=True)
loop.run()
EOF
}

listening() {
  "$PY" -c "import socket,sys; s=socket.socket(); s.settimeout(0.5); sys.exit(s.connect_ex(('127.0.0.1', $PORT)))" 2>/dev/null
}

pidfile="$DIR/$PORT.pid"

case "$cmd" in
  install)
    if check >/dev/null; then echo "RTSP server already installed"; exit 0; fi
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    echo "== apt-get install ${PACKAGES[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
    write_server
    check
    echo "RTSP server installed"
    ;;
  check)
    check
    ;;
  start)
    check >&2 || { echo "run tools/rtsp_server.sh install first" >&2; exit 1; }
    write_server
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "already running on port $PORT (pid $(cat "$pidfile"))"; exit 0
    fi
    nohup "$PY" "$DIR/server.py" --port "$PORT" --fps "${RTSP_FPS:-15}" --size "${RTSP_SIZE:-320x240}" \
      >"$DIR/$PORT.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    for _ in $(seq 100); do
      if listening; then echo "rtsp://127.0.0.1:$PORT/cam (pid $(cat "$pidfile"))"; exit 0; fi
      if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then break; fi
      sleep 0.1
    done
    echo "RTSP server did not start on port $PORT:" >&2
    cat "$DIR/$PORT.log" >&2
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
    exit 1
    ;;
  stop)
    [ -f "$pidfile" ] || { echo "not running on port $PORT"; exit 0; }
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile" "$DIR/$PORT.log"
    echo "stopped port $PORT"
    ;;
  status)
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && listening; then
      echo "running: rtsp://127.0.0.1:$PORT/cam (pid $(cat "$pidfile"))"
    else
      echo "not running on port $PORT"; exit 1
    fi
    ;;
  *)
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
