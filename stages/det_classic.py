"""Classical plate localisation: no network, only morphology on gradients.

Characters of a plate are a row of thin, high-contrast strokes of one height. A black-hat
(dark characters on a light plate) and a top-hat (light on dark) transform keep exactly such
strokes; their horizontal gradient, closed with a wide flat kernel, melts one plate's characters
into one blob. Blobs of a plate's shape (about 1.5:1 to 7:1 once grown to the plate's
margin), of plausible size and dense in vertical edges become candidates. This runs at several
kernel sizes because the characters' height in pixels is unknown.

It is the fallback of ``detect.plates`` when the PP-OCR text detector finds nothing plausible,
and a detector of its own (``ClassicPlateDetector``) where no model may run at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from .det_base import Detection, Detector, nms

__all__ = ["ClassicPlateDetector", "Region", "plate_extent", "plate_regions"]


@dataclass
class Region:
    """A candidate plate region (axis-aligned), in frame pixels, with the characters' box."""

    box: tuple[float, float, float, float]  # grown to the plate's margin
    chars: tuple[float, float, float, float]  # the characters only
    score: float
    angle: float = 0.0


def plate_regions(image: np.ndarray, work_width: int = 960, char_heights: Sequence[int] = (12, 20, 32),
                  max_regions: int = 12) -> list[Region]:
    """Plate-shaped regions of strong vertical strokes, best first.

    ``char_heights``: character heights (pixels at ``work_width``) the kernels are sized for.
    """
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    H0, W0 = gray.shape
    scale = min(1.0, work_width / max(W0, 1))
    if scale < 1.0:
        gray = cv2.resize(gray, (int(round(W0 * scale)), int(round(H0 * scale))), interpolation=cv2.INTER_AREA)
    H, W = gray.shape
    found: list[Region] = []
    for ch in char_heights:
        kw, kh = max(3, int(ch * 1.2)) | 1, max(3, int(ch * 0.45)) | 1
        rect = cv2.getStructuringElement(cv2.MORPH_RECT, (kw, kh))
        for op in (cv2.MORPH_BLACKHAT, cv2.MORPH_TOPHAT):
            hat = cv2.morphologyEx(gray, op, rect)
            grad = np.abs(cv2.Sobel(hat, cv2.CV_32F, 1, 0, ksize=3))
            peak = float(grad.max())
            if peak <= 0:
                continue
            grad = (255 * grad / peak).astype(np.uint8)
            grad = cv2.GaussianBlur(grad, (5, 5), 0)
            close = cv2.getStructuringElement(cv2.MORPH_RECT, (max(3, int(ch * 0.9)) | 1, max(3, int(ch * 0.3)) | 1))
            blob = cv2.morphologyEx(grad, cv2.MORPH_CLOSE, close)
            _, mask = cv2.threshold(blob, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
            mask = cv2.erode(mask, None, iterations=1)
            mask = cv2.dilate(mask, None, iterations=1)
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            for contour in contours:
                x, y, w, h = cv2.boundingRect(contour)
                if h < 0.6 * ch or h > 2.6 * ch or w < 2.0 * h or w > 9.0 * h:
                    continue
                if x <= 0 or y <= 0 or x + w >= W or y + h >= H:
                    continue  # touching the frame: a cut plate or a stripe of the scene
                fill = cv2.contourArea(contour) / float(w * h)
                if fill < 0.45:
                    continue
                roi = grad[y:y + h, x:x + w]
                density = float((roi > 60).mean())
                # the strokes: vertical edges should cross the middle row many times
                row = hat[y + h // 2, x:x + w].astype(np.float32)
                crossings = int(np.count_nonzero(np.diff((row > row.mean()).astype(np.int8))))
                per_h = crossings / max(w / h, 1.0)
                if crossings < 6:
                    continue
                s_shape = 1.0 if 2.5 <= w / h <= 6.5 else 0.6
                s_cross = min(1.0, per_h / 3.0)
                score = float(min(1.0, density * 2.0) * s_cross * s_shape * fill)
                # the closed blob already spans the plate (its border's edges close it too): a
                # small margin only
                d = 0.08 * h
                box = ((x - d) / scale, (y - d) / scale, (x + w + d) / scale, (y + h + d) / scale)
                box = (max(0.0, box[0]), max(0.0, box[1]), min(float(W0), box[2]), min(float(H0), box[3]))
                chars = (x / scale, y / scale, (x + w) / scale, (y + h) / scale)
                found.append(Region(box, chars, score))
    if not found:
        return []
    boxes = np.array([r.box for r in found], np.float32)
    scores = np.array([r.score for r in found], np.float32)
    keep = nms(boxes, scores, 0.3, max_det=max_regions)
    return [found[i] for i in keep]


def plate_extent(image: np.ndarray, box: Sequence[float]) -> tuple[float, float, float, float]:
    """Grow a plate's text-line box to the plate's own edges where they can be seen.

    The plate's background colour is sampled inside the line (the majority side of an Otsu
    split of its lightness: the characters are the minority); the connected region of that
    colour around the line, within half a line width sideways and a line height up and down,
    is the plate. It is only used when it looks like one: a solid, plate-shaped rectangle
    centred on the text and at most three times the line's area. Otherwise (a white plate on a
    white car, no visible edge) the line box stays.
    """
    H, W = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    if w < 8 or h < 4 or image.ndim != 3:
        return (x1, y1, x2, y2)
    rx1, ry1 = int(max(0, x1 - 0.3 * w)), int(max(0, y1 - 1.0 * h))
    rx2, ry2 = int(min(W, x2 + 0.3 * w)), int(min(H, y2 + 1.0 * h))
    lab = cv2.cvtColor(np.ascontiguousarray(image[ry1:ry2, rx1:rx2]), cv2.COLOR_BGR2LAB).astype(np.float32)
    lx1, ly1 = int(max(0, x1 - rx1)), int(max(0, y1 - ry1))
    lx2, ly2 = int(min(rx2 - rx1, x2 - rx1)), int(min(ry2 - ry1, y2 - ry1))
    inner = lab[ly1:ly2, lx1:lx2].reshape(-1, 3)
    if len(inner) < 20:
        return (x1, y1, x2, y2)
    lightness = np.ascontiguousarray(inner[:, 0]).astype(np.uint8)
    t, _ = cv2.threshold(lightness, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    light = lightness > t
    background = light if light.mean() >= 0.5 else ~light
    if background.sum() < 10:
        return (x1, y1, x2, y2)
    colour = np.median(inner[background], axis=0)
    spread = float(inner[background].std(axis=0).mean())
    mask = (np.linalg.norm(lab - colour, axis=2) < max(20.0, 2.5 * spread)).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    mask[ly1:ly2, lx1:lx2] = 1
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    bx, by, bw, bh, area = (int(v) for v in stats[labels[(ly1 + ly2) // 2, (lx1 + lx2) // 2]])
    if bw > 1.45 * w or bh > 3.0 * h or area < 0.6 * bw * bh:
        return (x1, y1, x2, y2)
    nb = (min(x1, rx1 + bx), min(y1, ry1 + by), max(x2, float(rx1 + bx + bw)), max(y2, float(ry1 + by + bh)))
    nw, nh = nb[2] - nb[0], nb[3] - nb[1]
    if nw * nh > 3.0 * w * h or not 1.2 <= nw / nh <= 6.5 or abs((x1 + x2) / 2 - (nb[0] + nb[2]) / 2) > 0.2 * nw:
        return (x1, y1, x2, y2)
    return (float(nb[0]), float(nb[1]), float(nb[2]), float(nb[3]))


class ClassicPlateDetector(Detector):
    """Plates by morphology alone (see the module docstring); scores are rough (0..1)."""

    name = "contours"

    def __init__(self, min_score: float = 0.3, max_plates: int = 3, work_width: int = 960,
                 refine_box: bool = True) -> None:
        self.min_score = min_score
        self.max_plates = max_plates
        self.work_width = work_width
        self.refine_box = refine_box

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        out = []
        for image in images:
            regions = [r for r in plate_regions(image, self.work_width) if r.score >= self.min_score]
            out.append([Detection(plate_extent(image, r.box) if self.refine_box else r.box, r.score, "plate", "plate",
                                  self.name) for r in regions[: self.max_plates]])
        return out
