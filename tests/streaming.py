"""Test helpers for capture stages: numbered frames and local stream servers.

* :func:`numbered_frame` / :func:`read_number` put a frame index into an image as a barcode of
  big black/white stripes, so it survives JPEG and MPEG-4 compression and can be read back.
* :func:`write_numbered_video` writes such frames into a video file with ``cv2.VideoWriter``.
* :class:`MjpegServer` serves numbered JPEG frames as HTTP MJPEG (``multipart/x-mixed-replace``)
  on 127.0.0.1, and can be cut (:meth:`MjpegServer.stop`), restored on the same port
  (:meth:`MjpegServer.start`) or stalled (:meth:`MjpegServer.pause`) to exercise reconnects.
* :class:`RtspServer` starts and stops the real RTSP server of ``tools/rtsp_server.sh``.

Everything listens on the loopback address only, and every loop is bounded by the test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

BITS = 16
REPO = Path(__file__).resolve().parents[1]
RTSP_SCRIPT = REPO / "tools" / "rtsp_server.sh"


# -- numbered frames ---------------------------------------------------------------------------


def numbered_frame(index: int, width: int = 320, height: int = 240) -> np.ndarray:
    """A BGR frame whose top half holds ``index`` as BITS stripes (white = 1), MSB first.

    The bottom half is a gradient that changes with the index, so consecutive frames differ
    (as in a real video) without touching the barcode.
    """
    if not 0 <= index < 2**BITS:
        raise ValueError(f"index {index} does not fit {BITS} bits")
    image = np.zeros((height, width, 3), np.uint8)
    stripe = width // BITS
    for bit in range(BITS):
        if index >> (BITS - 1 - bit) & 1:
            image[: height // 2, bit * stripe : (bit + 1) * stripe] = 255
    ramp = (np.arange(width, dtype=np.int32) + index * 7) % 256
    image[height // 2 + 4 :, :, 1] = ramp.astype(np.uint8)
    return image


def read_number(image: np.ndarray) -> int:
    """The index written by :func:`numbered_frame` (works on resized frames too)."""
    height, width = image.shape[:2]
    stripe = width / BITS
    band = image[height // 8 : height * 3 // 8]
    value = 0
    for bit in range(BITS):
        x1 = int(bit * stripe + stripe * 0.3)
        x2 = max(x1 + 1, int((bit + 1) * stripe - stripe * 0.3))
        value = value << 1 | int(band[:, x1:x2].mean() > 127)
    return value


def write_numbered_video(path: Path, frames: int, fps: float = 25.0, width: int = 320, height: int = 240,
                         first: int = 0) -> Path:
    """Write ``frames`` numbered frames (``first``, ``first + 1``, ...) as an mp4v video."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter cannot write {path}")
    try:
        for i in range(frames):
            writer.write(numbered_frame(first + i, width, height))
    finally:
        writer.release()
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- HTTP MJPEG --------------------------------------------------------------------------------


class MjpegServer:
    """Numbered JPEG frames as ``multipart/x-mixed-replace`` on ``http://127.0.0.1:PORT/stream.mjpg``.

    The frame counter survives :meth:`stop` / :meth:`start`, so frames sent after a restore have
    higher numbers than any sent before the cut. ``max_frames`` bounds what one run may send.
    """

    BOUNDARY = "alprframe"

    def __init__(self, port: int = 0, fps: float = 20.0, width: int = 320, height: int = 240,
                 max_frames: int = 20000) -> None:
        self.port = port or free_port()
        self.fps = fps
        self.width = width
        self.height = height
        self.max_frames = max_frames
        self.sent = 0  # frames sent, all clients together; also the next frame's number
        self.connections = 0  # clients that connected, all runs together
        self._paused = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> "MjpegServer":
        """Listen (again) on the same port."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path.split("?")[0] != "/stream.mjpg":
                    self.send_error(404)
                    return
                server._serve(self)

        deadline = time.monotonic() + 10
        while True:
            try:
                httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)  # the old socket may linger a moment after a stop
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Cut: stop listening and close every open client connection."""
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            for sock in list(self._sockets):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._sockets.clear()
        if self._thread is not None:
            self._thread.join(5)
        self._httpd = None

    def pause(self) -> None:
        """Stall: keep connections open but send nothing."""
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def __enter__(self) -> "MjpegServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        sock = handler.connection
        with self._lock:
            self._sockets.add(sock)
            self.connections += 1
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={self.BOUNDARY}")
            handler.send_header("Cache-Control", "no-cache")
            handler.end_headers()
            period = 1.0 / self.fps
            next_at = time.monotonic()
            while not self._stopping.is_set() and self.sent < self.max_frames:
                if self._paused.is_set():
                    time.sleep(0.02)
                    next_at = time.monotonic()
                    continue
                with self._lock:
                    number = self.sent
                    self.sent += 1
                ok, jpeg = cv2.imencode(".jpg", numbered_frame(number, self.width, self.height),
                                        [cv2.IMWRITE_JPEG_QUALITY, 85])
                assert ok
                data = jpeg.tobytes()
                handler.wfile.write(
                    f"--{self.BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                    + data + b"\r\n"
                )
                handler.wfile.flush()
                next_at += period
                time.sleep(max(0.0, next_at - time.monotonic()))
        except OSError:
            pass  # the client went away, or stop() cut the connection
        finally:
            with self._lock:
                self._sockets.discard(sock)


# -- RTSP (tools/rtsp_server.sh) ---------------------------------------------------------------


def rtsp_server_missing() -> str | None:
    """Why the real RTSP server cannot run here (None when it can)."""
    if not RTSP_SCRIPT.exists():
        return f"{RTSP_SCRIPT} is missing"
    result = subprocess.run(["bash", str(RTSP_SCRIPT), "check"], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        return (f"the RTSP test server is not installed ({(result.stdout + result.stderr).strip()}); "
                f"run `tools/rtsp_server.sh install` once")
    return None


class RtspServer:
    """The GStreamer RTSP server of ``tools/rtsp_server.sh``, serving a live H.264 test stream."""

    def __init__(self, port: int = 0, fps: int = 15, width: int = 320, height: int = 240) -> None:
        self.port = port or free_port()
        self.fps = fps
        self.width = width
        self.height = height

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def _script(self, *args: str) -> None:
        env = {**os.environ, "RTSP_FPS": str(self.fps), "RTSP_SIZE": f"{self.width}x{self.height}"}
        result = subprocess.run(["bash", str(RTSP_SCRIPT), *args, "--port", str(self.port)],
                                capture_output=True, text=True, timeout=60, env=env)
        if result.returncode != 0:
            raise RuntimeError(f"rtsp_server.sh {' '.join(args)} failed: {result.stdout}{result.stderr}")

    def start(self) -> "RtspServer":
        self._script("start")
        return self

    def stop(self) -> None:
        self._script("stop")

    def __enter__(self) -> "RtspServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- GStreamer pipelines in Debian's GStreamer (for the CPU templates of source.video) ---------

_PULL_SCRIPT = r"""
import sys
import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst
Gst.init(None)
missing = [e for e in sys.argv[3:] if Gst.ElementFactory.find(e) is None]
if missing:
    print("MISSING " + " ".join(missing))
    sys.exit(3)
pipeline = Gst.parse_launch(sys.argv[1].replace("appsink", "appsink name=out", 1))
sink = pipeline.get_by_name("out")
pipeline.set_state(Gst.State.PLAYING)
shapes = []
for _ in range(int(sys.argv[2])):
    sample = sink.emit("try-pull-sample", 10 * Gst.SECOND)
    if sample is None:
        break
    caps = sample.get_caps().get_structure(0)
    shapes.append(f"{caps.get_value('format')} {caps.get_value('width')}x{caps.get_value('height')}")
pipeline.set_state(Gst.State.NULL)
print("\n".join(shapes))
"""


def pull_gst_samples(pipeline: str, samples: int, needs: list[str]) -> list[str] | None:
    """Run ``pipeline`` (ending in appsink) in Debian's python3 + GStreamer and pull ``samples``
    buffers; returns their "FORMAT WxH", or None when GStreamer or one of ``needs`` is missing."""
    python = "/usr/bin/python3"
    if not os.path.exists(python):
        return None
    result = subprocess.run([python, "-c", _PULL_SCRIPT, pipeline, str(samples), *needs],
                            capture_output=True, text=True, timeout=60)
    if result.returncode == 3 or "No module named 'gi'" in result.stderr or "Namespace Gst not available" in result.stderr:
        return None
    if result.returncode != 0:
        raise RuntimeError(f"pipeline failed: {result.stderr[-2000:]}")
    return [line for line in result.stdout.splitlines() if line.strip()]
