"""What a ``source.video`` url is, and how OpenCV opens it.

Kinds: ``file`` (a path, or ``file://``), ``stream`` (rtsp, http(s), rtmp, udp, tcp, srt: anything
FFmpeg reads), ``device`` (V4L2: ``/dev/videoN`` or an int index) and ``gstreamer`` (a pipeline
string, ``gst:`` prefix or ``backend: gstreamer``, or an RTSP url turned into a pipeline by a
template of :mod:`.cap_gst`).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from .cap_gst import gst_pipeline, gstreamer_available, gstreamer_missing_reason

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp", "mms")


class CaptureError(RuntimeError):
    """A capture source that cannot work as configured (reported at setup)."""


@dataclass(frozen=True)
class SourceSpec:
    """A classified url: what to hand to ``cv2.VideoCapture`` and how to treat it."""

    kind: str  # "file" | "stream" | "device" | "gstreamer"
    target: str | int
    api: int
    display: str  # for logs: credentials masked
    live: bool
    scheme: str = ""
    ffmpeg_options: dict[str, str] = field(default_factory=dict)


def mask_url(url: str) -> str:
    """The url with any password replaced by ``***`` (for logs and status pages)."""
    return re.sub(r"(?i)(\b[a-z][a-z0-9+.-]*://[^:/@\s]+):[^@/\s]*@", r"\1:***@", url)


def classify(
    url: str | int,
    backend: str = "auto",
    *,
    live: bool | None = None,
    gst_template: str | None = None,
    gst_latency_ms: int = 200,
    rtsp_transport: str = "tcp",
    ffmpeg_options: dict[str, str] | None = None,
) -> SourceSpec:
    """Decide what ``url`` is. Raises :class:`CaptureError` / ``FileNotFoundError`` with a message
    a user understands when it cannot be read here."""
    options = dict(ffmpeg_options or {})
    if isinstance(url, bool):
        raise CaptureError(f"url must be a path, a url, a device or a pipeline, not {url!r}")
    if isinstance(url, int) or (isinstance(url, str) and url.strip().isdigit() and not Path(url).exists()):
        if backend not in ("auto", "v4l2"):
            raise CaptureError(f"device index {url} needs backend auto or v4l2, not {backend}")
        index = int(url)
        return SourceSpec("device", index, cv2.CAP_V4L2, f"/dev/video{index}", True if live is None else live)
    text = url.strip()
    if not text:
        raise CaptureError("url is empty")

    if gst_template or backend == "gstreamer" or text.startswith("gst:"):
        if not gstreamer_available():
            raise CaptureError(f"cannot read {mask_url(text)!r} through GStreamer: {gstreamer_missing_reason()}")
        if gst_template:
            pipeline = gst_pipeline(text, gst_template, gst_latency_ms,
                                    protocols=rtsp_transport if rtsp_transport in ("tcp", "udp") else None)
        else:
            pipeline = text[4:].strip() if text.startswith("gst:") else text
        if "appsink" not in pipeline:
            raise CaptureError(f"GStreamer pipeline must end in appsink (OpenCV reads from it): {mask_url(pipeline)!r}")
        return SourceSpec("gstreamer", pipeline, cv2.CAP_GSTREAMER, mask_url(pipeline), True if live is None else live)

    scheme_match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", text)
    scheme = scheme_match.group(1).lower() if scheme_match else ""
    if scheme == "file":
        text, scheme = text[len("file://"):], ""
    if text.startswith("/dev/video") or backend == "v4l2":
        if scheme:
            raise CaptureError(f"backend v4l2 reads devices (/dev/videoN or an index), not {mask_url(text)!r}")
        return SourceSpec("device", text, cv2.CAP_V4L2, text, True if live is None else live)
    api = cv2.CAP_FFMPEG if backend in ("auto", "ffmpeg") else cv2.CAP_ANY
    if scheme:
        if scheme not in STREAM_SCHEMES:
            raise CaptureError(f"unknown url scheme {scheme!r} in {mask_url(text)!r}; "
                               f"expected a file path, /dev/videoN, gst:PIPELINE or one of {', '.join(STREAM_SCHEMES)}")
        if scheme in ("rtsp", "rtsps") and rtsp_transport in ("tcp", "udp"):
            options.setdefault("rtsp_transport", rtsp_transport)
        return SourceSpec("stream", text, api, mask_url(text), True if live is None else live, scheme, options)
    path = Path(text).expanduser()
    if not path.is_file():
        hint = " (it is a folder: use source.images for a folder of images)" if path.is_dir() else ""
        raise FileNotFoundError(f"no such video file: {path}{hint} (cwd {os.getcwd()})")
    return SourceSpec("file", str(path), api, str(path), False if live is None else live, "", options)


_ENV_LOCK = threading.Lock()
_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


def open_capture(
    spec: SourceSpec,
    *,
    open_timeout_s: float = 10.0,
    read_timeout_s: float | None = None,
    hw_accel: bool = False,
    device: dict[str, Any] | None = None,
) -> cv2.VideoCapture:
    """Open ``spec`` (may block up to ``open_timeout_s`` for streams). Check ``isOpened()``.

    ``read_timeout_s`` makes a blocking read of an FFmpeg stream give up (the stall timeout).
    FFmpeg options go through ``OPENCV_FFMPEG_CAPTURE_OPTIONS``, which OpenCV reads while opening;
    a lock keeps two captures of one process from mixing theirs.
    """
    params: list[int] = []
    if spec.api == cv2.CAP_FFMPEG:
        if spec.kind == "stream":
            params += [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, max(1, int(open_timeout_s * 1000))]
            if read_timeout_s:
                params += [cv2.CAP_PROP_READ_TIMEOUT_MSEC, max(1, int(read_timeout_s * 1000))]
        if hw_accel:
            params += [cv2.CAP_PROP_HW_ACCELERATION, cv2.VIDEO_ACCELERATION_ANY]
    with _ENV_LOCK:
        saved = os.environ.get(_OPTIONS_ENV)
        if spec.ffmpeg_options:
            mine = "|".join(f"{k};{v}" for k, v in spec.ffmpeg_options.items())
            os.environ[_OPTIONS_ENV] = f"{saved}|{mine}" if saved else mine
        try:
            cap = cv2.VideoCapture(spec.target, spec.api, params) if params else cv2.VideoCapture(spec.target, spec.api)
        finally:
            if spec.ffmpeg_options:
                if saved is None:
                    os.environ.pop(_OPTIONS_ENV, None)
                else:
                    os.environ[_OPTIONS_ENV] = saved
    if cap.isOpened() and spec.kind == "device" and device:
        fourcc = device.get("fourcc")
        if fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*fourcc))
        if device.get("width"):
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, device["width"])
        if device.get("height"):
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, device["height"])
        if device.get("fps"):
            cap.set(cv2.CAP_PROP_FPS, device["fps"])
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the driver's queue short: latest frame wins
    return cap
