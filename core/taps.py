"""What the status page shows besides numbers: a live annotated preview per camera and the latest
plate events with their crops, written by the workers as small files into the run folder.

Why files: frames never travel to the supervisor (it never touches them), and the page reads the
files straight from ``<run>/taps/`` as it reads the log files. Why in the worker: it is the only
place that holds the frame together with what the stages found in it.

- **Preview**: while a status page is watching (it touches ``taps/wanted`` every few seconds;
  workers look at its time stamp once per heartbeat), every stage that handles frames writes, at
  most once per :data:`PREVIEW_INTERVAL_S` per camera, a JPEG of the envelope it just handled
  (frame scaled to at most :data:`PREVIEW_WIDTH` pixels, with detection boxes, track ids and plate
  text drawn on it) to ``taps/preview/<camera>/<stage>.jpg``. The page shows, per camera, the
  deepest stage's picture. Nobody watching: nothing is drawn or encoded.
- **Events**: a stage without downstream stages (``publish.local``, ``publish.kafka``, a sink) that
  receives a plate event (``env.meta["event"]``, made by ``dedup.plates``) keeps the last
  :data:`EVENTS_KEPT` of them in ``taps/events/<stage>.<replica>.json``, with the plate crop
  (``env.meta["images"]["plate_jpeg"]``) beside them as ``taps/events/<event_id>.jpg``.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from .envelope import Envelope, FrameRef, InlineFrame
from .framepool import PoolReader, StaleFrame

PREVIEW_INTERVAL_S = 1.0
PREVIEW_WIDTH = 640
WANTED_FOR_S = 10.0  # a page that stopped touching taps/wanted this long ago is gone
EVENTS_KEPT = 20

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def safe_name(name: str) -> str:
    """A camera id or stage name as a file name (no path separators, no leading dot)."""
    return _UNSAFE.sub("_", str(name)).lstrip(".") or "_"


def touch_wanted(folder: Path) -> None:
    """Called by the status page while it shows previews."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wanted").touch()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class Taps:
    """The preview and event taps of one stage instance (see the module docstring)."""

    def __init__(self, folder: Path, stage: str, replica: int, sink: bool) -> None:
        self.folder = folder
        self.stage = stage
        self.replica = replica
        self.sink = sink
        self.watching = False
        self.last_preview: dict[str, float] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)

    def check_wanted(self) -> None:
        """Once per heartbeat: is a status page watching?"""
        try:
            self.watching = time.time() - (self.folder / "wanted").stat().st_mtime < WANTED_FOR_S
        except OSError:
            self.watching = False

    def after(self, env: Envelope, outs: list[Envelope], reader: PoolReader) -> None:
        """After a stage handled ``env`` (and returned ``outs``), while ``env``'s frame is still leased."""
        if self.sink and isinstance(env.meta.get("event"), dict):
            self._event(env)
        if not self.watching:
            return
        shown = outs[0] if outs else env  # what the stage made of it: its detections, tracks, plates
        if shown.frame is None or (isinstance(shown.frame, FrameRef) and shown.frame != env.frame):
            return  # no frame, or a new frame not yet published (the next stage shows it)
        now = time.monotonic()
        if now - self.last_preview.get(shown.camera_id, 0.0) < PREVIEW_INTERVAL_S:
            return
        self.last_preview[shown.camera_id] = now
        try:
            image = self._copy(shown.frame, reader)
        except (StaleFrame, ValueError, OSError):
            return
        if image is None:
            return
        jpeg = render_preview(image, shown)
        if jpeg:
            target = self.folder / "preview" / safe_name(shown.camera_id)
            target.mkdir(parents=True, exist_ok=True)
            _write_atomic(target / f"{safe_name(self.stage)}.jpg", jpeg)

    @staticmethod
    def _copy(frame: FrameRef | InlineFrame, reader: PoolReader) -> np.ndarray | None:
        if isinstance(frame, InlineFrame):
            array = np.frombuffer(frame.data, dtype=frame.dtype).reshape(frame.shape)
        else:
            array = np.array(reader.view(frame))
            if not reader.still_valid(frame):
                return None  # overwritten while we copied it
        return array if array.ndim in (2, 3) and array.dtype == np.uint8 else None

    def _event(self, env: Envelope) -> None:
        event = {**env.meta["event"], "_seen": time.time(), "_stage": self.stage}
        event_id = _UNSAFE.sub("_", str(event.get("event_id") or f"{env.camera_id}-{env.frame_id}"))
        folder = self.folder / "events"
        folder.mkdir(parents=True, exist_ok=True)
        crop = (env.meta.get("images") or {}).get("plate_jpeg")
        if isinstance(crop, (bytes, bytearray, memoryview)) and crop:
            _write_atomic(folder / f"{event_id}.jpg", bytes(crop))
            event["_crop"] = f"{event_id}.jpg"
        if len(self.events) == self.events.maxlen:
            gone = self.events[0].get("_crop")
            if gone:
                (folder / gone).unlink(missing_ok=True)
        self.events.append(event)
        _write_atomic(folder / f"{safe_name(self.stage)}.{self.replica}.json",
                      json.dumps(list(self.events), default=str).encode())


def render_preview(image: np.ndarray, env: Envelope) -> bytes | None:
    """The frame scaled down with boxes, track ids and plate text drawn on it, as JPEG."""
    import cv2

    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    height, width = image.shape[:2]
    scale = min(1.0, PREVIEW_WIDTH / max(1, width))
    image = cv2.resize(image, (max(1, int(width * scale)), max(1, int(height * scale)))) if scale < 1 else image.copy()

    def box(values: Any) -> tuple[int, int, int, int] | None:
        try:
            x1, y1, x2, y2 = (int(float(v) * scale) for v in list(values)[:4])
        except (TypeError, ValueError):
            return None
        return x1, y1, x2, y2

    def label(text: str, x: int, y: int, color: tuple[int, int, int]) -> None:
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        y = max(th + 4, y)
        cv2.rectangle(image, (x, y - th - 4), (x + tw + 4, y), color, -1)
        cv2.putText(image, text, (x + 2, y - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)

    for det in env.detections:
        b = box(det.get("box", ())) if isinstance(det, dict) else None
        if b is None:
            continue
        color = (0, 215, 255) if det.get("kind") == "plate" else (80, 200, 80)
        cv2.rectangle(image, b[:2], b[2:], color, 2)
        if det.get("track_id") is not None:
            label(f"#{det['track_id']}", b[0], b[1], color)
    for plate in env.plates:
        b = box(plate.get("box", ())) if isinstance(plate, dict) else None
        text = plate.get("normalized") or plate.get("text") if isinstance(plate, dict) else None
        if b is not None and text:
            label(str(text), b[0], b[3] + 18, (255, 255, 255))
    label(f"{env.camera_id} #{env.frame_id}", 4, 18, (220, 220, 220))
    ok, data = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), 75])
    return data.tobytes() if ok else None
