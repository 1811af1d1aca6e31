"""What every detector backend shares: the :class:`Detection` record, the :class:`Detector`
interface, letterboxing, IoU / NMS, class names and the plate-to-vehicle association.

A backend turns a batch of BGR frames into one list of detections per frame::

    detector.detect([frame_cam1, frame_cam2]) -> [[Detection, ...], [Detection, ...]]

Boxes are ``[x1, y1, x2, y2]`` floats in pixels of the frame they were found in. The stages in
:mod:`alpr_topo.stages.detect` write them into ``env.detections`` as docs/vision.md describes.
"""

from __future__ import annotations

import ast
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = [
    "COCO_NAMES", "VEHICLE_LABELS", "Detection", "Detector", "Letterbox", "associate",
    "box_aspect", "box_iou", "iou_matrix", "letterbox", "nms", "parse_names", "plate_label", "physical_cores",
    "default_threads",
]

log = logging.getLogger("alpr_topo.detect")

#: The 80 COCO class names in the order YOLO models trained on COCO emit them.
COCO_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)

#: Class names that are vehicles (kind ``vehicle``); the label keeps the class name.
VEHICLE_LABELS: frozenset[str] = frozenset({"car", "truck", "bus", "motorcycle"})
#: Extra spellings some vehicle datasets use, mapped onto the labels of docs/vision.md.
VEHICLE_ALIASES: dict[str, str] = {
    "motorbike": "motorcycle", "van": "car", "suv": "car", "pickup": "truck", "lorry": "truck",
    "vehicle": "vehicle", "automobile": "car",
}


def plate_label(name: str) -> bool:
    """Whether a model's class name means a license plate ("License Plate", "plate", "lp")."""
    n = name.strip().lower().replace("_", " ").replace("-", " ")
    return "plate" in n or n in {"lp", "license", "licence", "number"}


def vehicle_label(name: str) -> str | None:
    """The vision.md label for a vehicle class name, or None when it is not a vehicle."""
    n = name.strip().lower()
    if n in VEHICLE_LABELS:
        return n
    return VEHICLE_ALIASES.get(n)


@dataclass
class Detection:
    """One detected object, in pixels of its frame."""

    box: tuple[float, float, float, float]
    score: float
    kind: str  # "vehicle" or "plate"
    label: str
    detector: str
    vehicle: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``env.detections`` entry (plain floats so the envelope crosses msgpack)."""
        out: dict[str, Any] = {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 4),
            "kind": self.kind,
            "label": self.label,
            "detector": self.detector,
        }
        if self.kind == "plate":
            out["vehicle"] = self.vehicle
        out.update(self.extra)
        return out


class Detector:
    """A detector backend. ``detect`` takes BGR ``uint8`` frames (read-only views are fine) and
    returns one list of detections per frame, in the same order."""

    #: The ``detector`` field of its detections, e.g. ``yolo:plate-detector-yolov9t-416-int8``.
    name: str = "detector"

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        raise NotImplementedError

    def warmup(self) -> None:
        """Run once on a blank frame so the first real frame is not slow."""

    def close(self) -> None:
        """Release the model (sessions, GPU memory)."""


# -- letterbox --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Letterbox:
    """How a frame was fitted into the model input: ``input = frame * ratio + (pad_x, pad_y)``."""

    ratio: float
    pad_x: int
    pad_y: int
    width: int  # the original frame's size
    height: int

    def to_frame(self, boxes: np.ndarray) -> np.ndarray:
        """Map ``[..., 4]`` boxes from model-input pixels back to frame pixels, clipped to it."""
        out = np.array(boxes, dtype=np.float32, copy=True)
        out[..., [0, 2]] = (out[..., [0, 2]] - self.pad_x) / self.ratio
        out[..., [1, 3]] = (out[..., [1, 3]] - self.pad_y) / self.ratio
        out[..., [0, 2]] = out[..., [0, 2]].clip(0, self.width)
        out[..., [1, 3]] = out[..., [1, 3]].clip(0, self.height)
        return out

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Frame pixels to model-input pixels (the inverse of :meth:`to_frame`, without clipping)."""
        out = np.array(boxes, dtype=np.float32, copy=True)
        out[..., [0, 2]] = out[..., [0, 2]] * self.ratio + self.pad_x
        out[..., [1, 3]] = out[..., [1, 3]] * self.ratio + self.pad_y
        return out


def letterbox(image: np.ndarray, size: tuple[int, int], pad_value: int = 114,
              scale_up: bool = True) -> tuple[np.ndarray, Letterbox]:
    """Resize ``image`` to fit ``size`` = (height, width) keeping its aspect ratio, centred, the
    rest filled with ``pad_value`` (Ultralytics' convention: grey 114).

    Returns the new ``uint8`` image and the :class:`Letterbox` that maps boxes back.
    """
    import cv2

    h, w = image.shape[:2]
    th, tw = size
    ratio = min(th / h, tw / w)
    if not scale_up:
        ratio = min(ratio, 1.0)
    nw, nh = max(1, int(round(w * ratio))), max(1, int(round(h * ratio)))
    pad_x, pad_y = (tw - nw) // 2, (th - nh) // 2
    canvas = np.full((th, tw, image.shape[2] if image.ndim == 3 else 1), pad_value, dtype=np.uint8)
    if (nw, nh) != (w, h):
        resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR)
    else:
        resized = image
    if resized.ndim == 2:
        resized = resized[:, :, None]
    canvas[pad_y:pad_y + nh, pad_x:pad_x + nw] = resized
    if image.ndim == 2:
        canvas = canvas[:, :, 0]
    return canvas, Letterbox(ratio=ratio, pad_x=pad_x, pad_y=pad_y, width=w, height=h)


# -- boxes ------------------------------------------------------------------------------------


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``[x1, y1, x2, y2]`` boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def box_aspect(box: Sequence[float]) -> float:
    """Width / height of an ``[x1, y1, x2, y2]`` box; 0 for an empty one."""
    width, height = float(box[2]) - float(box[0]), float(box[3]) - float(box[1])
    return width / height if width > 0 and height > 0 else 0.0


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``[N, 4]`` and ``[M, 4]`` boxes: ``[N, M]``."""
    a = np.asarray(a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
        classes: np.ndarray | None = None, max_det: int = 300) -> np.ndarray:
    """Greedy non-maximum suppression; indices kept, best score first.

    With ``classes``, boxes of different classes never suppress each other (class-aware NMS).
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    if classes is not None:
        # shift each class into its own region of the plane so boxes of two classes never overlap
        offset = float(max(boxes.max(), 1.0)) + 1.0
        boxes = boxes + (np.asarray(classes, dtype=np.float32).reshape(-1, 1) * offset)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    while order.size and len(keep) < max_det:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(x1[i], x1[rest])
        yy1 = np.maximum(y1[i], y1[rest])
        xx2 = np.minimum(x2[i], x2[rest])
        yy2 = np.minimum(y2[i], y2[rest])
        inter = (xx2 - xx1).clip(0) * (yy2 - yy1).clip(0)
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


# -- class names ------------------------------------------------------------------------------


def parse_names(value: Any) -> dict[int, str] | None:
    """Class names from model metadata: Ultralytics writes ``"{0: 'person', 1: 'bicycle'}"``
    (a Python literal); JSON objects or lists are accepted too. None when unreadable."""
    if value is None:
        return None
    data = value
    if isinstance(value, str):
        for loader in (ast.literal_eval, json.loads):
            try:
                data = loader(value)
                break
            except (ValueError, SyntaxError, TypeError):
                continue
        else:
            return None
    if isinstance(data, (list, tuple)):
        return {i: str(n) for i, n in enumerate(data)}
    if isinstance(data, dict):
        try:
            return {int(k): str(v) for k, v in data.items()}
        except (TypeError, ValueError):
            return None
    return None


# -- threads ----------------------------------------------------------------------------------


def physical_cores() -> int:
    """Physical CPU cores (hyper-threads share one core's units: more threads only contend)."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
        if n:
            return int(n)
    except Exception:  # psutil missing or unable to read /proc
        pass
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_threads(limit: int = 4) -> int:
    """Intra-op threads for one CPU model: the physical cores, at most ``limit``."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:
        available = os.cpu_count() or 1
    return max(1, min(physical_cores(), available, limit))


# -- association ------------------------------------------------------------------------------


def associate(detections: list[dict[str, Any]], min_inside: float = 0.6) -> None:
    """Set ``vehicle`` on every plate of ``detections`` (the dicts of ``env.detections``): the
    index of the vehicle that contains it, else None.

    A vehicle qualifies when at least ``min_inside`` of the plate's area lies inside its box and
    the plate's centre is not in the top quarter of the vehicle (plates sit at the front or back,
    low on the body, never on the roof). Among qualifying vehicles the one containing the larger
    share of the plate wins; on a tie, the one whose lower part holds the plate (the plate centre
    closest to 3/4 of the vehicle's height: a car in front of another covers the lower part of the
    one behind), then the smaller box.
    """
    vehicles = [(i, d["box"]) for i, d in enumerate(detections) if d.get("kind") == "vehicle"]
    for det in detections:
        if det.get("kind") != "plate":
            continue
        best: tuple[float, float, float] | None = None
        best_index: int | None = None
        px1, py1, px2, py2 = det["box"]
        parea = max((px2 - px1) * (py2 - py1), 1e-6)
        pcx, pcy = (px1 + px2) / 2, (py1 + py2) / 2
        for index, (vx1, vy1, vx2, vy2) in vehicles:
            vw, vh = vx2 - vx1, vy2 - vy1
            if vw <= 0 or vh <= 0:
                continue
            inter = max(0.0, min(px2, vx2) - max(px1, vx1)) * max(0.0, min(py2, vy2) - max(py1, vy1))
            inside = inter / parea
            if inside < min_inside or not (vx1 <= pcx <= vx2) or pcy < vy1 + 0.25 * vh:
                continue
            rel = (pcy - vy1) / vh
            key = (round(inside, 2), -abs(rel - 0.75), -vw * vh)
            if best is None or key > best:
                best, best_index = key, index
        det["vehicle"] = best_index


def boxes_array(dets: Iterable[Detection]) -> np.ndarray:
    return np.array([d.box for d in dets], dtype=np.float32).reshape(-1, 4)
