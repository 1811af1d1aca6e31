"""Vehicles by motion: background subtraction per camera, for sites without a vehicle model.

``cv2.createBackgroundSubtractorMOG2`` learns each camera's background on a downscaled colour
frame; the foreground mask is cleaned (shadows dropped, opening removes noise, closing joins the
parts of one vehicle: windows and body split by reflections), and blobs big enough to be a
vehicle become ``vehicle`` detections labelled ``vehicle`` (docs/vision.md). The score is the
share of the blob's box that moved, so a solid moving object scores near 1.

Each camera keeps its own subtractor, keyed by ``camera_id``; a camera unseen for
``idle_s`` seconds is forgotten (its background relearned on return). Nothing is reported during
a camera's first ``warmup_frames`` frames, while the background is still being learned.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

import cv2
import numpy as np

from .det_base import Detection, Detector

__all__ = ["MotionDetector"]


@dataclass
class _Camera:
    subtractor: Any
    frames: int = 0
    last_seen: float = field(default_factory=time.monotonic)
    shape: tuple[int, ...] = ()


class MotionDetector(Detector):
    """Moving blobs -> vehicle boxes, one background model per camera."""

    name = "motion"

    def __init__(self, *, work_width: int = 480, history: int = 300, var_threshold: float = 25.0,
                 detect_shadows: bool = True, min_area_frac: float = 0.004, max_area_frac: float = 0.6,
                 min_aspect: float = 0.3, max_aspect: float = 4.0, warmup_frames: int = 10,
                 learning_rate: float = -1.0, max_cameras: int = 256, idle_s: float = 600.0) -> None:
        self.work_width = work_width
        self.history = history
        self.var_threshold = var_threshold
        self.detect_shadows = detect_shadows
        self.min_area_frac = min_area_frac
        self.max_area_frac = max_area_frac
        self.min_aspect = min_aspect
        self.max_aspect = max_aspect
        self.warmup_frames = warmup_frames
        self.learning_rate = learning_rate
        self.max_cameras = max_cameras
        self.idle_s = idle_s
        self.cameras: OrderedDict[str, _Camera] = OrderedDict()

    def detect(self, images: Sequence[np.ndarray], cameras: Sequence[str] | None = None) -> list[list[Detection]]:
        """One list per frame; ``cameras`` names each frame's camera (default: one camera)."""
        cams = list(cameras) if cameras is not None else ["default"] * len(images)
        return [self.detect_one(image, cam) for image, cam in zip(images, cams)]

    def _camera(self, camera: str, shape: tuple[int, ...]) -> _Camera:
        now = time.monotonic()
        for key in [k for k, c in self.cameras.items() if now - c.last_seen > self.idle_s]:
            del self.cameras[key]
        cam = self.cameras.get(camera)
        if cam is None or cam.shape != shape:  # new camera, or its resolution changed: relearn
            cam = _Camera(cv2.createBackgroundSubtractorMOG2(self.history, self.var_threshold, self.detect_shadows),
                          shape=shape)
            self.cameras[camera] = cam
            while len(self.cameras) > self.max_cameras:
                self.cameras.popitem(last=False)
        self.cameras.move_to_end(camera)
        cam.last_seen = now
        return cam

    def detect_one(self, image: np.ndarray, camera: str = "default") -> list[Detection]:
        H, W = image.shape[:2]
        scale = min(1.0, self.work_width / max(W, 1))
        small = cv2.resize(image, (max(1, int(W * scale)), max(1, int(H * scale))), interpolation=cv2.INTER_AREA) \
            if scale < 1.0 else image
        # colour, not grey: MOG2 tells a shadow (darker, same hue) from a dark vehicle by colour
        small = cv2.GaussianBlur(small, (5, 5), 0)
        cam = self._camera(camera, tuple(image.shape))
        mask = cam.subtractor.apply(small, learningRate=self.learning_rate)
        cam.frames += 1
        if cam.frames <= self.warmup_frames:
            return []
        _, mask = cv2.threshold(mask, 200, 255, cv2.THRESH_BINARY)  # 127 marks shadows: not vehicles
        h, w = mask.shape
        k = max(3, int(round(min(h, w) / 80)) | 1)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3 * k, 3 * k)))
        mask = cv2.dilate(mask, None, iterations=1)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        area_img = float(h * w)
        out: list[Detection] = []
        for i in range(1, n):
            x, y, bw, bh, area = (int(v) for v in stats[i])
            if bw * bh < self.min_area_frac * area_img or bw * bh > self.max_area_frac * area_img:
                continue
            aspect = bw / max(bh, 1)
            if not self.min_aspect <= aspect <= self.max_aspect:
                continue
            score = min(1.0, area / float(bw * bh))
            box = (x / scale, y / scale, min(W, (x + bw) / scale), min(H, (y + bh) / scale))
            out.append(Detection(box, float(score), "vehicle", "vehicle", self.name))
        out.sort(key=lambda d: -(d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
        return out

    def forget(self, camera: str | None = None) -> None:
        """Drop one camera's background (or all)."""
        if camera is None:
            self.cameras.clear()
        else:
            self.cameras.pop(camera, None)
