"""Capture stages: one process per camera, frames decoded into the stage's shared-memory pool.

``source.video``
    A video file, an RTSP / HTTP(S) / other FFmpeg stream, a V4L2 device or a GStreamer pipeline.
    Files are read in ``produce`` and decoded straight into the frame's slot where OpenCV allows
    it; live sources are read by a background thread that keeps only the newest frame and
    reconnects with backoff (:mod:`.cap_live`).
``source.images``
    A folder of images, in natural order, with the OpenALPR benchmark truth where it is beside
    them (:mod:`.cap_images`).

Both follow docs/vision.md: BGR uint8 frames of shape (height, width, 3), ``frame_id`` increasing
per camera, ``captured_at`` wall-clock seconds. Parameters and behaviour: docs/capture.md.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Annotated, Any, Literal

import cv2
import numpy as np
from pydantic import Field, model_validator

from ..core.envelope import Envelope, FrameRef
from ..core.stage import Source, StageParams
from .cap_gst import (
    CPU_AUTO_PIPELINE,
    CPU_H264_PIPELINE,
    CPU_H265_PIPELINE,
    GST_TEMPLATES,
    JETSON_H264_PIPELINE,
    JETSON_H265_PIPELINE,
    gst_pipeline,
    gstreamer_available,
    gstreamer_missing_reason,
)
from .cap_images import list_images, read_openalpr_truth, scale_truth
from .cap_live import LiveReader, RateLimiter, device_settings
from .cap_open import CaptureError, SourceSpec, classify, mask_url, open_capture

__all__ = [
    "CPU_AUTO_PIPELINE", "CPU_H264_PIPELINE", "CPU_H265_PIPELINE", "CaptureError", "GST_TEMPLATES",
    "ImageFolder", "ImagesParams", "JETSON_H264_PIPELINE", "JETSON_H265_PIPELINE", "STAGE_TYPES",
    "VideoParams", "VideoSource", "gst_pipeline", "gstreamer_available", "gstreamer_missing_reason", "mask_url",
]

Size = tuple[Annotated[int, Field(ge=8, le=16384)], Annotated[int, Field(ge=8, le=16384)]]
GstTemplate = Literal["jetson-h264", "jetson-h265", "cpu-h264", "cpu-h265", "cpu-auto"]
STATS_EVERY_S = 0.25  # how often thread-side stats are copied into the stage's counters
MAX_GRABS_PER_CALL = 32  # frames a file source may skip in one produce() before it yields


def _same_buffer(a: np.ndarray, b: np.ndarray) -> bool:
    return a is b or (a.shape == b.shape and a.dtype == b.dtype
                      and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


class _Meter:
    """Output rate, decode time and the longest produce() call, written into ``ctx.counters``."""

    def __init__(self, counters: dict[str, float]) -> None:
        self.counters = counters
        self.emitted: deque[float] = deque(maxlen=256)
        self.decode_ms = 0.0
        self.decoded = 0
        self.produce_max_ms = 0.0

    def frame_out(self) -> None:
        self.emitted.append(time.monotonic())

    def decode(self, ms: float) -> None:
        self.decoded += 1
        self.decode_ms = ms if self.decoded == 1 else self.decode_ms * 0.9 + ms * 0.1

    def fps(self) -> float:
        now = time.monotonic()
        while self.emitted and now - self.emitted[0] > 2.0:
            self.emitted.popleft()
        if len(self.emitted) < 2:
            return 0.0
        return (len(self.emitted) - 1) / max(now - self.emitted[0], 1e-6)

    def produced(self, started: float) -> None:
        ms = (time.perf_counter() - started) * 1000.0
        if ms > self.produce_max_ms:
            self.produce_max_ms = ms
            self.counters["produce_max_ms"] = round(ms, 3)

    def set(self, **values: float) -> None:
        for name, value in values.items():
            self.counters[name] = float(value)


# -- source.video ------------------------------------------------------------------------------


class VideoParams(StageParams):
    url: str | int = Field(..., description="video file path, rtsp:// http(s):// (or any FFmpeg url), "
                           "/dev/videoN or a device index, or a GStreamer pipeline ('gst:' prefix)")
    camera_id: str = Field("", description="camera id put on every envelope; default: the stage's name")
    backend: Literal["auto", "ffmpeg", "gstreamer", "v4l2"] = Field(
        "auto", description="OpenCV backend; auto = FFmpeg for files and urls, V4L2 for devices")
    gst_template: GstTemplate | None = Field(
        None, description="turn an rtsp:// url into this GStreamer pipeline (see docs/capture.md)")
    gst_latency_ms: int = Field(200, ge=0, le=60000, description="rtspsrc latency of gst_template pipelines")
    live: bool | None = Field(None, description="read in a background thread, latest frame wins, reconnect "
                              "(default: true for streams, devices and pipelines, false for files)")
    loop: bool = Field(False, description="files: start again at start_s after the end")
    realtime: bool = Field(True, description="files: pace frames at the file's frame rate; "
                           "false = as fast as downstream takes them")
    max_fps: float = Field(0.0, ge=0, description="emit at most this many frames per second; 0 = no limit")
    skip: int = Field(1, ge=1, description="keep every Nth frame of the source (1 = all)")
    count: int = Field(0, ge=0, description="frames to emit before finishing; 0 = all (endless for live sources)")
    start_s: float = Field(0.0, ge=0, description="files: start this many seconds into the video")
    resize: Size | None = Field(None, description="[width, height] to resize every frame to; default: as decoded")
    reconnect_initial_s: float = Field(0.5, gt=0, description="live: first wait before reconnecting")
    reconnect_max_s: float = Field(30.0, gt=0, description="live: the wait doubles up to this")
    stall_timeout_s: float = Field(10.0, gt=0, description="live: no frame for this long -> reconnect")
    open_timeout_s: float = Field(10.0, gt=0, description="streams: give up opening after this long (then retry)")
    rtsp_transport: Literal["tcp", "udp", "auto"] = Field("tcp", description="RTSP over TCP (default) or UDP")
    ffmpeg_options: dict[str, str] = Field(default_factory=dict, description="extra FFmpeg demuxer/protocol "
                                           "options for streams, e.g. {fflags: nobuffer}")
    hw_accel: bool = Field(False, description="ask FFmpeg for hardware decoding where available")
    device_fourcc: str | None = Field(None, min_length=4, max_length=4, description="devices: pixel format, e.g. MJPG")
    device_size: Size | None = Field(None, description="devices: [width, height] to request")
    device_fps: float = Field(0.0, ge=0, description="devices: frame rate to request; 0 = the device's default")
    zero_copy: bool = Field(True, description="files: decode straight into the shared-memory slot")

    @model_validator(mode="after")
    def _check(self) -> "VideoParams":
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be >= reconnect_initial_s")
        if self.gst_template and isinstance(self.url, int):
            raise ValueError("gst_template needs an rtsp:// url")
        return self


class VideoSource(Source):
    """Frames from a video file, an RTSP/HTTP stream, a V4L2 device or a GStreamer pipeline."""

    type_name = "source.video"
    Params = VideoParams
    params: VideoParams

    def setup(self) -> None:
        p = self.params
        self.camera = p.camera_id or self.ctx.name
        self.spec: SourceSpec = classify(
            p.url, p.backend, live=p.live, gst_template=p.gst_template, gst_latency_ms=p.gst_latency_ms,
            rtsp_transport=p.rtsp_transport, ffmpeg_options=p.ffmpeg_options,
        )
        self.meter = _Meter(self.ctx.counters)
        self.emitted = 0
        self.reader: LiveReader | None = None
        self.cap: Any = None
        self._stats_due = 0.0
        self._retry_at = 0.0
        for name in ("dropped", "reconnects", "skipped", "zero_copy_frames", "copied_frames"):
            self.ctx.counters.setdefault(name, 0.0)
        if self.spec.live:
            self._setup_live()
        else:
            self._setup_file()

    def _open_kwargs(self) -> dict[str, Any]:
        p = self.params
        return {
            "open_timeout_s": p.open_timeout_s,
            "hw_accel": p.hw_accel,
            "device": device_settings(p.device_fourcc, p.device_size, p.device_fps),
        }

    # -- live sources --------------------------------------------------------------------------

    def _setup_live(self) -> None:
        p = self.params
        self.reader = LiveReader(
            self.spec, self.log, camera=self.camera, open_kwargs=self._open_kwargs(),
            reconnect_initial_s=p.reconnect_initial_s, reconnect_max_s=p.reconnect_max_s,
            stall_timeout_s=p.stall_timeout_s, skip=p.skip, max_fps=p.max_fps,
            pace=p.realtime, loop=p.loop,  # only for a file read as a live camera
        )
        self.reader.start()
        self.log.info("camera %s: reading %s %s in the background", self.camera, self.spec.kind, self.spec.display)

    def _produce_live(self) -> Envelope | None:
        assert self.reader is not None
        self.reader.watchdog()
        frame = self.reader.take()
        if frame is None:
            if self.reader.ended:  # a file read as a camera, without loop, is over
                self.finished = True
                self._close()
            return None
        shape = self._out_shape(frame.image.shape)
        slot = self.ctx.new_frame(shape)
        if slot is None:
            self.reader.put_back(frame)  # every slot busy: the frame waits, or a newer one replaces it
            self._retry_at = time.monotonic() + 0.005
            return None
        ref, array = slot
        self._fill(array, frame.image)
        self.reader.recycle(frame.image)
        self.meter.decode(frame.decode_ms)
        return self._envelope(ref, frame.seq, frame.captured_at, {})

    # -- files ---------------------------------------------------------------------------------

    def _setup_file(self) -> None:
        p = self.params
        self.cap = self._open_file()
        fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not 0.0 < fps < 1000.0:
            if p.realtime:
                self.log.warning("camera %s: %s reports no frame rate; pacing at 25 fps", self.camera, self.spec.display)
            fps = 25.0
        self.fps = fps
        self.frames_in_file = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.read_index = 0  # frames read since setup, all loops together: the frame id
        self.loops = 0
        self.pass_frames = 0  # frames read in the current pass over the file
        self.video_limiter = RateLimiter(p.max_fps if p.realtime else 0.0, tolerance_s=1e-6)
        self.grabbed: dict[str, Any] | None = None  # a frame read but not yet given a slot
        self.t0: float | None = None  # wall (monotonic) time of video time 0 when realtime
        #: wall-clock time of video time 0, so captured_at is the file's own time (see _produce_file)
        self.epoch: float | None = None
        self.last_emit = 0.0
        self.shape = (int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)), 3)
        self._decode_buf: np.ndarray | None = None
        self.log.info("camera %s: %s, %dx%d at %.2f fps, %d frames", self.camera, self.spec.display,
                      self.shape[1], self.shape[0], fps, self.frames_in_file)

    def _open_file(self) -> Any:
        cap = open_capture(self.spec, **self._open_kwargs())
        if not cap.isOpened():
            cap.release()
            backend = {cv2.CAP_FFMPEG: "FFmpeg", cv2.CAP_GSTREAMER: "GStreamer", cv2.CAP_V4L2: "V4L2"}.get(
                self.spec.api, "any backend")
            if self.spec.kind == "file":
                raise CaptureError(f"cannot decode video file {self.spec.display} with OpenCV {cv2.__version__} "
                                   f"({backend}): not a video, or a codec this build lacks")
            raise CaptureError(f"cannot open {self.spec.display} with OpenCV {cv2.__version__} ({backend}); "
                               "with live: false it is read as a file and must be reachable at setup")
        start = self.params.start_s
        if start > 0:
            if not cap.set(cv2.CAP_PROP_POS_MSEC, start * 1000.0):
                while cap.get(cv2.CAP_PROP_POS_MSEC) < start * 1000.0 - 1e-3:  # no seeking: read up to it
                    if not cap.grab():
                        break
        return cap

    def _file_start_index(self) -> int:
        return int(round(self.params.start_s * self.fps))

    def _advance(self) -> bool:
        """Read up to the next frame to keep (without decoding to BGR); False if none now."""
        p = self.params
        for _ in range(MAX_GRABS_PER_CALL):
            t0 = time.perf_counter()
            if not self.cap.grab():
                if not self._end_of_pass():
                    return False
                continue
            grab_ms = (time.perf_counter() - t0) * 1000.0
            index = self.read_index
            self.read_index += 1
            self.pass_frames += 1
            video_t = index / self.fps
            if index % p.skip or not self.video_limiter.keep(video_t):
                self.ctx.count("skipped")
                continue
            self.grabbed = {
                "frame_id": index,
                "video_t": video_t,
                "pos_ms": float(self.cap.get(cv2.CAP_PROP_POS_MSEC)),
                "source_frame": self._file_start_index() + self.pass_frames - 1,
                "loop": self.loops,
                "grab_ms": grab_ms,
            }
            return True
        return False

    def _end_of_pass(self) -> bool:
        """At the end of the file: loop (True) or finish (False)."""
        if self.pass_frames == 0:
            self.log.error("camera %s: no frames in %s%s", self.camera, self.spec.display,
                           f" after start_s={self.params.start_s}" if self.params.start_s else "")
            self.finished = True
            return False
        if not self.params.loop:
            self.finished = True
            return False
        self.cap.release()
        self.cap = self._open_file()
        self.loops += 1
        self.pass_frames = 0
        return True

    def _file_due(self) -> float:
        """Monotonic time the grabbed frame is due (0 = now)."""
        assert self.grabbed is not None
        p = self.params
        if p.realtime:
            now = time.monotonic()
            if self.t0 is None:
                self.t0 = now - self.grabbed["video_t"]
            due = self.t0 + self.grabbed["video_t"]
            if now - due > 1.0:  # downstream fell behind: go on from here rather than burst to catch up
                self.t0 += now - due
                due = now
            return due
        if p.max_fps > 0 and self.emitted:
            return self.last_emit + 1.0 / p.max_fps
        return 0.0

    def _produce_file(self) -> Envelope | None:
        if self.grabbed is None and not self._advance():
            return None
        if time.monotonic() < self._file_due():
            return None
        grabbed = self.grabbed
        assert grabbed is not None
        shape = self._out_shape(self.shape)
        slot = self.ctx.new_frame(shape)
        if slot is None:
            self._retry_at = time.monotonic() + 0.005
            return None  # the frame stays grabbed until a slot is free
        ref, array = slot
        t0 = time.perf_counter()
        direct = self.params.zero_copy and self.params.resize is None
        ok, image = self.cap.retrieve(image=array if direct else self._decode_buf)
        if not ok or image is None:
            self.ctx.pool.discard(ref)
            self.grabbed = None
            self.ctx.count("decode_errors")
            self.log.warning("camera %s: cannot decode frame %d of %s", self.camera, grabbed["source_frame"],
                             self.spec.display)
            return None
        if direct and _same_buffer(image, array):
            self.ctx.count("zero_copy_frames")
        else:
            if image.shape[:2] != self.shape[:2]:
                self.shape = (image.shape[0], image.shape[1], 3)  # the stream changed size
            if self.params.resize is None and image.shape != array.shape:
                self.ctx.pool.discard(ref)
                slot = self.ctx.new_frame(image.shape)
                if slot is None:
                    self.ctx.count("dropped")
                    self.grabbed = None
                    return None
                ref, array = slot
            self._fill(array, image)
            if not direct:
                self._decode_buf = image
            if self.params.resize is None:
                self.ctx.count("copied_frames")
        self.meter.decode(grabbed["grab_ms"] + (time.perf_counter() - t0) * 1000.0)
        self.grabbed = None
        self.last_emit = time.monotonic()
        meta = {"pos_ms": grabbed["pos_ms"], "source_frame": grabbed["source_frame"], "loop": grabbed["loop"]}
        # A file's frames are stamped with the video's own clock, anchored at the wall time of the
        # first frame: track timeouts, rereads and dedup windows downstream then mean the same in
        # the scene whether the machine reads the file at 3 or 300 frames/s.
        if self.epoch is None:
            self.epoch = time.time() - grabbed["video_t"]
        return self._envelope(ref, grabbed["frame_id"], self.epoch + grabbed["video_t"], meta)

    # -- shared --------------------------------------------------------------------------------

    def _out_shape(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        if self.params.resize:
            width, height = self.params.resize
            return (height, width, 3)
        return (int(shape[0]), int(shape[1]), 3)

    def _fill(self, array: np.ndarray, image: np.ndarray) -> None:
        if image.ndim == 2 or image.shape[2] != 3:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR if image.ndim == 2 else cv2.COLOR_BGRA2BGR)
        if image.shape == array.shape:
            np.copyto(array, image)
        else:
            cv2.resize(image, (array.shape[1], array.shape[0]), dst=array, interpolation=cv2.INTER_AREA)

    def _envelope(self, ref: FrameRef, frame_id: int, captured_at: float, meta: dict[str, Any]) -> Envelope:
        self.emitted += 1
        self.meter.frame_out()
        self._sync_stats(force=True)
        c = self.ctx.counters
        meta["capture"] = {
            "fps": round(self.meter.fps(), 2),
            "dropped": int(c.get("dropped", 0)),
            "reconnects": int(c.get("reconnects", 0)),
            "decode_ms": round(self.meter.decode_ms, 3),
            "source": self.spec.kind,
        }
        if self.params.count and self.emitted >= self.params.count:
            self.finished = True
            self._close()
        return Envelope(camera_id=self.camera, frame_id=int(frame_id), captured_at=captured_at, frame=ref, meta=meta)

    def _sync_stats(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._stats_due:
            return
        self._stats_due = now + STATS_EVERY_S
        values: dict[str, float] = {"fps": round(self.meter.fps(), 2), "decode_ms": round(self.meter.decode_ms, 3)}
        if self.reader is not None:
            s = self.reader.snapshot()
            values.update(dropped=s.dropped, reconnects=s.reconnects, skipped=s.skipped, connected=int(s.connected),
                          frames_read=s.read, abandoned_readers=s.abandoned)
        self.meter.set(**values)

    def produce(self) -> Envelope | None:
        started = time.perf_counter()
        try:
            p = self.params
            if self.finished:
                return None
            if p.count and self.emitted >= p.count:
                self.finished = True
                self._close()
                return None
            if self.reader is not None:
                return self._produce_live()
            return self._produce_file()
        finally:
            self._sync_stats()
            self.meter.produced(started)

    def wait_s(self) -> float:
        now = time.monotonic()
        if now < self._retry_at:
            return self._retry_at - now
        if self.reader is not None:
            self.reader.watchdog()  # also while downstream is full and produce() is not called
            self._sync_stats()
            return 0.0 if self.reader.pending() else 0.005
        if self.finished or getattr(self, "grabbed", None) is None:
            return 0.0
        return max(0.0, self._file_due() - now)

    def _close(self, wait_s: float = 0.0) -> None:
        """Stop reading. From produce() without waiting (the reader may be in a blocking read);
        teardown gives the reader a moment to release its capture."""
        if self.reader is not None:
            self.reader.stop(timeout=wait_s)
            self._sync_stats(force=True)
        if self.cap is not None:
            self.cap.release()
            self.cap = None

    def teardown(self) -> None:
        self._close(wait_s=3.0)


# -- source.images -----------------------------------------------------------------------------


class ImagesParams(StageParams):
    path: str = Field(..., min_length=1, description="folder of images")
    glob: str = Field("*", min_length=1, description="which files, relative to path ('**/*.jpg' recurses); "
                      "only image files (jpg, png, bmp, tif, webp, ...) are read")
    camera_id: str = Field("", description="camera id put on every envelope; default: the stage's name")
    loop: bool = Field(False, description="start again after the last image")
    fps: float = Field(0.0, ge=0, description="images per second; 0 = as fast as downstream takes them")
    count: int = Field(0, ge=0, description="images to emit before finishing; 0 = all")
    start: int = Field(0, ge=0, description="index (in natural order) of the first image")
    resize: Size | None = Field(None, description="[width, height] to resize every image to (truth boxes follow)")
    truth: bool = Field(True, description="attach OpenALPR benchmark truth (NAME.txt beside NAME.jpg) as meta.truth")


class ImageFolder(Source):
    """Frames from a folder of images; attaches OpenALPR benchmark ground truth when present."""

    type_name = "source.images"
    Params = ImagesParams
    params: ImagesParams

    def setup(self) -> None:
        p = self.params
        self.camera = p.camera_id or self.ctx.name
        folder = Path(p.path).expanduser()
        if not folder.is_dir():
            what = "it is a file: use source.video for a video" if folder.is_file() else "no such folder"
            raise FileNotFoundError(f"no such image folder: {folder} ({what}; cwd {Path.cwd()})")
        self.folder = folder.resolve()
        self.files = list_images(self.folder, p.glob)
        if not self.files:
            raise CaptureError(f"no images matching {p.glob!r} in {self.folder}")
        if p.start >= len(self.files):
            raise CaptureError(f"start={p.start} but {self.folder} holds only {len(self.files)} matching images")
        self.index = p.start  # next image in self.files
        self.serial = 0  # images taken so far (frame id = start + serial)
        self.emitted = 0
        self.pending: tuple[int, Path, np.ndarray, float] | None = None
        self.started: float | None = None
        self.meter = _Meter(self.ctx.counters)
        self._retry_at = 0.0
        self.ctx.counters.setdefault("unreadable", 0.0)
        self.log.info("camera %s: %d images in %s", self.camera, len(self.files), self.folder)

    def wait_s(self) -> float:
        now = time.monotonic()
        if now < self._retry_at:
            return self._retry_at - now
        if self.params.fps <= 0 or self.started is None:
            return 0.0
        return max(0.0, self.started + self.emitted / self.params.fps - now)

    def _next(self) -> tuple[int, Path, np.ndarray, float] | None:
        """Read the next image; None when the folder is done (or this one was unreadable)."""
        if self.index >= len(self.files):
            if not self.params.loop:
                self.finished = True
                return None
            self.index = 0
        path = self.files[self.index]
        self.index += 1
        frame_id = self.params.start + self.serial
        self.serial += 1
        t0 = time.perf_counter()
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            self.ctx.count("unreadable")
            self.log.warning("camera %s: cannot read image %s; skipped", self.camera, path)
            if not self.emitted and self.ctx.counters["unreadable"] >= len(self.files):
                self.log.error("camera %s: none of the %d images in %s can be read", self.camera,
                               len(self.files), self.folder)
                self.finished = True
            return None
        return frame_id, path, image, (time.perf_counter() - t0) * 1000.0

    def produce(self) -> Envelope | None:
        started = time.perf_counter()
        try:
            return self._produce()
        finally:
            self.meter.produced(started)

    def _produce(self) -> Envelope | None:
        p = self.params
        if p.count and self.emitted >= p.count:
            self.finished = True
            return None
        if self.wait_s() > 0:
            return None
        if self.pending is None:
            self.pending = self._next()
            if self.pending is None:
                return None
        frame_id, path, image, decode_ms = self.pending
        height, width = image.shape[:2]
        out_w, out_h = p.resize if p.resize else (width, height)
        slot = self.ctx.new_frame((out_h, out_w, 3))
        if slot is None:
            self._retry_at = time.monotonic() + 0.005
            return None  # keep the image until a slot is free
        self.pending = None
        ref, array = slot
        if p.resize:
            cv2.resize(image, (out_w, out_h), dst=array, interpolation=cv2.INTER_AREA)
        else:
            np.copyto(array, image)
        if self.started is None:
            self.started = time.monotonic()
        self.emitted += 1
        self.meter.frame_out()
        self.meter.decode(decode_ms)
        self.meter.set(fps=round(self.meter.fps(), 2), decode_ms=round(self.meter.decode_ms, 3))
        meta: dict[str, Any] = {
            "image_path": str(path),
            "capture": {"fps": round(self.meter.fps(), 2), "dropped": 0, "reconnects": 0,
                        "decode_ms": round(self.meter.decode_ms, 3), "source": "images"},
        }
        if p.truth:
            truth = read_openalpr_truth(path, self.log)
            if truth is not None:
                if p.resize:
                    truth = scale_truth(truth, out_w / width, out_h / height)
                meta["truth"] = truth
        if p.count and self.emitted >= p.count:
            self.finished = True
        elif self.index >= len(self.files) and not p.loop:
            self.finished = True
        return Envelope(camera_id=self.camera, frame_id=frame_id, captured_at=time.time(), frame=ref, meta=meta)


STAGE_TYPES = [VideoSource, ImageFolder]
