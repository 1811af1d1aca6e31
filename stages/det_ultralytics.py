"""YOLO ``.pt`` checkpoints through the ``ultralytics`` package (optional, not a dependency).

For trying a freshly trained model before exporting it; production runs the ``.onnx`` export
(``yolo export model=best.pt format=onnx``) with :mod:`alpr_topo.stages.det_yolo` or TensorRT.
Class names come from the checkpoint; the same :class:`~alpr_topo.stages.det_yolo.ClassMap`
decides what is a plate or a vehicle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .det_base import Detection, Detector
from .det_yolo import ClassMap

__all__ = ["UltralyticsDetector", "ultralytics_available"]


def ultralytics_available() -> tuple[bool, str]:
    try:
        import ultralytics  # noqa: F401
    except ImportError:
        return False, "the `ultralytics` package is not installed (pip install ultralytics)"
    return True, ""


class UltralyticsDetector(Detector):
    """A ``.pt`` model run by ``ultralytics.YOLO.predict`` (letterboxing and NMS are its own)."""

    def __init__(self, model: str, *, kind: str = "auto", classes: Sequence[str | int] | None = None,
                 conf: float = 0.25, iou: float = 0.45, input_size: int | Sequence[int] | None = None,
                 device: str | None = None, batch_size: int = 8, max_det: int = 300, name: str | None = None) -> None:
        ok, why = ultralytics_available()
        if not ok:
            raise ImportError(why)
        from ultralytics import YOLO

        self.yolo = YOLO(model)
        names = getattr(self.yolo, "names", None) or {}
        self.classmap = ClassMap(kind, {int(k): str(v) for k, v in dict(names).items()} or None, classes)
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.imgsz = list(input_size) if isinstance(input_size, (list, tuple)) else (input_size or 640)
        self.device = device
        self.batch_size = max(1, batch_size)
        self.name = name or f"ultralytics:{Path(model).stem}"

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        out: list[list[Detection]] = []
        for start in range(0, len(images), self.batch_size):
            chunk = [np.ascontiguousarray(im) for im in images[start:start + self.batch_size]]
            kwargs: dict[str, Any] = dict(conf=self.conf, iou=self.iou, imgsz=self.imgsz, verbose=False,
                                          max_det=self.max_det)
            if self.device:
                kwargs["device"] = self.device
            for result in self.yolo.predict(chunk, **kwargs):
                boxes = result.boxes
                xyxy = boxes.xyxy.cpu().numpy() if len(boxes) else np.zeros((0, 4))
                scores = boxes.conf.cpu().numpy() if len(boxes) else np.zeros(0)
                classes = boxes.cls.cpu().numpy().astype(int) if len(boxes) else np.zeros(0, int)
                dets = []
                for box, score, cls in zip(xyxy, scores, classes):
                    mapped = self.classmap.map(int(cls))
                    if mapped:
                        dets.append(Detection(tuple(float(v) for v in box), float(score), mapped[0], mapped[1], self.name))
                out.append(dets)
        return out

    def warmup(self) -> None:
        self.detect([np.zeros((480, 640, 3), np.uint8)])
