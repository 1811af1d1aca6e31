"""GStreamer pipelines for ``source.video``: ready templates and a builder from an RTSP URL.

OpenCV reads a GStreamer pipeline string only when it was built with GStreamer (look for
``GStreamer: YES`` under ``Video I/O`` in ``cv2.getBuildInformation()``). The pip wheels are not;
on a Jetson the JetPack OpenCV (``python3-opencv`` / ``nvidia-opencv``) is. Every pipeline must end
in ``appsink`` and deliver BGR frames.

Templates (``{location}`` and ``{latency}`` are filled in by :func:`gst_pipeline`):

``jetson-h264`` / ``jetson-h265``
    RTSP into the Jetson's hardware decoder (NVDEC via ``nvv4l2decoder``), ``nvvidconv`` out of
    NVMM memory to BGRx, ``videoconvert`` to BGR. The appsink keeps only the newest buffer
    (``drop=1 max-buffers=1``), so latency never builds up when the graph is slower than the camera.
``cpu-h264`` / ``cpu-h265``
    The same with the software decoders of ``gst-libav`` (``avdec_h264`` / ``avdec_h265``).
``cpu-auto``
    ``decodebin`` picks whatever decoder is installed (any codec, hardware where GStreamer has it).
"""

from __future__ import annotations

import re
from functools import lru_cache

_APPSINK = "videoconvert ! video/x-raw,format=BGR ! appsink drop=1 max-buffers=1"

#: Jetson, H.264 over RTSP, decoded by NVDEC (nvv4l2decoder). The pipeline of docs/capture.md.
JETSON_H264_PIPELINE = (
    "rtspsrc location={location} latency={latency} ! rtph264depay ! h264parse ! nvv4l2decoder ! "
    "nvvidconv ! video/x-raw,format=BGRx ! " + _APPSINK
)
#: Jetson, H.265 over RTSP, decoded by NVDEC.
JETSON_H265_PIPELINE = (
    "rtspsrc location={location} latency={latency} ! rtph265depay ! h265parse ! nvv4l2decoder ! "
    "nvvidconv ! video/x-raw,format=BGRx ! " + _APPSINK
)
#: Any machine, H.264 over RTSP, decoded on the CPU (gst-libav).
CPU_H264_PIPELINE = "rtspsrc location={location} latency={latency} ! rtph264depay ! h264parse ! avdec_h264 ! " + _APPSINK
#: Any machine, H.265 over RTSP, decoded on the CPU (gst-libav).
CPU_H265_PIPELINE = "rtspsrc location={location} latency={latency} ! rtph265depay ! h265parse ! avdec_h265 ! " + _APPSINK
#: Any codec: decodebin chooses the decoder.
CPU_AUTO_PIPELINE = "rtspsrc location={location} latency={latency} ! decodebin ! " + _APPSINK

GST_TEMPLATES: dict[str, str] = {
    "jetson-h264": JETSON_H264_PIPELINE,
    "jetson-h265": JETSON_H265_PIPELINE,
    "cpu-h264": CPU_H264_PIPELINE,
    "cpu-h265": CPU_H265_PIPELINE,
    "cpu-auto": CPU_AUTO_PIPELINE,
}

_SAFE_LOCATION = re.compile(r"^[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]+$")


def gst_pipeline(url: str, template: str = "jetson-h264", latency_ms: int = 200, protocols: str | None = None) -> str:
    """The GStreamer pipeline string that reads ``url`` (``rtsp://`` or ``rtsps://``) with ``template``.

    ``protocols`` (``"tcp"``, ``"udp"``, ...) is passed to ``rtspsrc`` when given. Example::

        >>> gst_pipeline("rtsp://10.0.0.5:554/stream1")  # doctest: +NORMALIZE_WHITESPACE
        'rtspsrc location="rtsp://10.0.0.5:554/stream1" latency=200 ! rtph264depay ! h264parse !
        nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR !
        appsink drop=1 max-buffers=1'
    """
    if template not in GST_TEMPLATES:
        raise ValueError(f"unknown GStreamer template {template!r}; known: {', '.join(GST_TEMPLATES)}")
    if not re.match(r"^rtsps?://", url, re.IGNORECASE):
        raise ValueError(f"GStreamer templates read RTSP; expected an rtsp:// or rtsps:// url, got {url!r}")
    if not _SAFE_LOCATION.match(url):
        raise ValueError(f"url {url!r} holds characters that cannot go into a pipeline (percent-encode them)")
    if not 0 <= int(latency_ms) <= 60000:
        raise ValueError(f"latency_ms must be 0..60000, got {latency_ms}")
    location = '"' + url + '"'
    if protocols:
        if not re.fullmatch(r"[a-z+-]+", protocols):
            raise ValueError(f"bad rtspsrc protocols value {protocols!r}")
        location += f" protocols={protocols}"
    return GST_TEMPLATES[template].format(location=location, latency=int(latency_ms))


@lru_cache(maxsize=1)
def opencv_video_backends() -> dict[str, bool]:
    """Which video I/O backends this OpenCV was built with, from ``cv2.getBuildInformation()``."""
    import cv2

    info = cv2.getBuildInformation()
    found: dict[str, bool] = {}
    section = False
    for line in info.splitlines():
        if line.strip().startswith("Video I/O:"):
            section = True
            continue
        if section:
            match = re.match(r"^\s+([^:]+):\s*(.*)$", line)
            if not match or not line.startswith("    "):
                break
            found[match.group(1).strip().lower()] = match.group(2).strip().upper().startswith("YES")
    return found


def gstreamer_available() -> bool:
    """True when this OpenCV can read GStreamer pipelines."""
    return opencv_video_backends().get("gstreamer", False)


def gstreamer_missing_reason() -> str:
    """Why a GStreamer pipeline cannot be read here, for error messages and test skips."""
    import cv2

    return (f"this OpenCV ({cv2.__version__}) was built without GStreamer (cv2.getBuildInformation() "
            "shows 'GStreamer: NO' under 'Video I/O'); install an OpenCV built with GStreamer "
            "(on a Jetson: JetPack's python3-opencv), or read the stream with FFmpeg "
            "(an rtsp:// url with backend ffmpeg)")
