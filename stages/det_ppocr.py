"""Offline plate localisation with the PP-OCR models that ship inside ``rapidocr-onnxruntime``
(no download, no model file to manage).

1. **Text lines.** The DB ("differentiable binarization") text detector marks text pixels; its
   probability map becomes text lines the way PaddleOCR does it: threshold, contours,
   minimum-area rectangles, "unclip" by ``area * ratio / perimeter``. The unclipped line of a
   plate's characters spans about the plate itself.
2. **Candidates.** Every line, every pair of lines side by side that could be one line
   (``ABC`` + ``1234``) and every pair stacked like the rows of a two-line plate.
3. **Shape score** (no pixels read yet): width / height of a plate (about 1.5 to 6.5 for the
   grown line box), tall enough to be read, not tilted past 25 degrees, a confident DB score, and
   not a *satellite*: a small line hugging a much taller one (the state name, the dealer's
   frame text, "TEXAS" under the number) is decoration of that plate, not the plate.
4. **Character score.** The best-shaped candidates are read with PP-OCR's recogniser: a plate
   reads as 4 to 9 upper-case letters and digits, usually with at least one digit, and little
   else; words, dates, phone numbers and logos do not. This is the "character-like structure"
   test, done by a network that was trained for it.
5. **Fallbacks**, only for a frame where nothing plausible turned up: the DB pass again on a
   contrast-stretched (CLAHE) and slightly larger frame, then the classical morphology
   detector of :mod:`alpr_topo.stages.det_classic`, whose regions are read and scored the same way.

Score = ``sqrt(shape) * (0.1 + 0.9 * characters)``, 0..1. The box of each plate kept is finally
grown from its text line to the plate's visible edges (:func:`plate_extent`). See docs/detect.md for the parameters
and the measured recall.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from .det_base import Detection, Detector, box_iou, default_threads, nms
from .det_classic import plate_extent

log = logging.getLogger("alpr_topo.detect.ppocr")

__all__ = [
    "DBTextDetector", "PPOCRPlateDetector", "TextLine", "TextRecognizer", "embedded_model",
    "plate_extent", "rapidocr_version", "text_plausibility",
]

DET_MODEL_NAME = "ch_PP-OCRv4_det_infer.onnx"
REC_MODEL_NAME = "ch_PP-OCRv4_rec_infer.onnx"
MIN_SHAPE = 0.1  # candidates shaped less like a plate than this are not even read
SEPARATORS = set(" -·.•")
#: Camera overlays: a year followed by a separator, dd-dd-dd dates, clock times.
DATE_TIME = re.compile(r"(?<![A-Za-z0-9])(19|20)\d\d\s*[^A-Za-z0-9\s]|\d\d?\s*[-/.=:]\s*\d\d\s*[-/.=:]\s*\d\d"
                       r"|(?<![A-Za-z0-9])\d\d?\s*:\s*\d\d")


def rapidocr_version() -> str | None:
    """The installed ``rapidocr-onnxruntime`` version, or None."""
    try:
        from importlib.metadata import version

        return version("rapidocr-onnxruntime")
    except Exception:
        return None


def embedded_model(name: str = DET_MODEL_NAME) -> Path:
    """Path of a PP-OCR model inside the installed rapidocr-onnxruntime package.

    Found through the package's import spec without importing it. Raises FileNotFoundError
    saying what to install when it is not there.
    """
    import importlib.util

    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded plate detector needs the PP-OCR models of rapidocr-onnxruntime: "
            "pip install 'rapidocr-onnxruntime>=1.3,<2'"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / name
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{name} is not in rapidocr-onnxruntime's models/ folder "
        f"({', '.join(spec.submodule_search_locations)}); reinstall rapidocr-onnxruntime"
    )


def _session(model: str, threads: int | None, providers: Sequence[str] | str) -> Any:
    from .det_yolo import make_session  # one place that knows providers and CPU options

    return make_session(model, providers=providers, threads=threads or default_threads())


@dataclass
class TextLine:
    """One text region, in frame pixels: a rotated rectangle (w along the text) and its score."""

    cx: float
    cy: float
    w: float
    h: float
    angle: float  # degrees, -45..45
    score: float

    @property
    def box(self) -> tuple[float, float, float, float]:
        pts = cv2.boxPoints(((self.cx, self.cy), (self.w, self.h), self.angle))
        return (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))

    @classmethod
    def from_box(cls, box: Sequence[float], score: float, angle: float = 0.0) -> "TextLine":
        x1, y1, x2, y2 = box
        return cls((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, angle, score)


# -- the DB text detector ---------------------------------------------------------------------


class DBTextDetector:
    """PP-OCR's DB text detector: frames -> text lines. Frames of any size are batched by padding."""

    def __init__(self, model: str | os.PathLike[str] | None = None, *, max_side: int = 960,
                 thresh: float = 0.3, box_thresh: float = 0.5, unclip_ratio: float = 1.6,
                 min_size: float = 3.0, threads: int | None = None,
                 providers: Sequence[str] | str = "cpu") -> None:
        self.model = str(model or embedded_model(DET_MODEL_NAME))
        self.max_side = max_side
        self.thresh = thresh
        self.box_thresh = box_thresh
        self.unclip_ratio = unclip_ratio
        self.min_size = min_size
        self.session = _session(self.model, threads, providers)
        self.input_name = self.session.get_inputs()[0].name

    def scaled_size(self, h: int, w: int, max_side: int | None = None) -> tuple[int, int]:
        """Network input size: longer side ``max_side`` (never upscaled past 1.5x), multiples of 32."""
        ratio = min((max_side or self.max_side) / max(h, w), 1.5)
        return max(32, int(round(h * ratio / 32)) * 32), max(32, int(round(w * ratio / 32)) * 32)

    def probability(self, images: Sequence[np.ndarray], max_side: int | None = None) -> list[tuple[np.ndarray, float, float]]:
        """Per frame: the text probability map and its x and y scale to frame pixels."""
        sizes = [self.scaled_size(*im.shape[:2], max_side=max_side) for im in images]
        H = max(s[0] for s in sizes)
        W = max(s[1] for s in sizes)
        batch = np.zeros((len(images), 3, H, W), dtype=np.float32)  # 0 is mid grey once normalised
        for i, (im, (nh, nw)) in enumerate(zip(images, sizes)):
            if im.ndim == 2:
                im = cv2.cvtColor(im, cv2.COLOR_GRAY2BGR)
            interp = cv2.INTER_AREA if nw < im.shape[1] else cv2.INTER_LINEAR
            x = cv2.resize(im, (nw, nh), interpolation=interp).astype(np.float32) * (2.0 / 255.0) - 1.0
            batch[i, :, :nh, :nw] = x.transpose(2, 0, 1)
        pred = self.session.run(None, {self.input_name: batch})[0]
        return [(pred[i, 0, :nh, :nw], im.shape[1] / nw, im.shape[0] / nh)
                for i, (im, (nh, nw)) in enumerate(zip(images, sizes))]

    def lines(self, prob: np.ndarray, sx: float, sy: float) -> list[TextLine]:
        """Text lines of one probability map, unclipped, in frame pixels."""
        mask = cv2.dilate((prob > self.thresh).astype(np.uint8), np.ones((2, 2), np.uint8))
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        found: list[TextLine] = []
        for contour in contours[:1000]:
            (cx, cy), (rw, rh), angle = cv2.minAreaRect(contour)
            if min(rw, rh) < self.min_size:
                continue
            score = _mean_in_contour(prob, contour)
            if score < self.box_thresh:
                continue
            d = rw * rh * self.unclip_ratio / max(2 * (rw + rh), 1e-6)  # PaddleOCR's unclip distance
            rw, rh = rw + 2 * d, rh + 2 * d
            if rw < rh:  # make w run along the text
                rw, rh = rh, rw
                angle += 90
            angle = (angle + 90) % 180 - 90  # -90..90
            if angle > 45:
                angle -= 90
                rw, rh = rh, rw
            elif angle < -45:
                angle += 90
                rw, rh = rh, rw
            a = math.radians(angle)
            s_along = math.hypot(sx * math.cos(a), sy * math.sin(a))
            s_across = math.hypot(sx * math.sin(a), sy * math.cos(a))
            found.append(TextLine(cx * sx, cy * sy, rw * s_along, rh * s_across, float(angle), float(score)))
        return found


def crop_line(image: np.ndarray, line: TextLine, height: int, max_width: int) -> np.ndarray:
    """The rotated rectangle of ``line`` cut out upright, ``height`` rows, its width scaled alike
    (at most ``max_width``)."""
    a = math.radians(line.angle)
    u = np.array([math.cos(a), math.sin(a)]) * line.w / 2  # along the text (cv2.boxPoints' convention)
    v = np.array([-math.sin(a), math.cos(a)]) * line.h / 2  # across it, downwards
    c = np.array([line.cx, line.cy])
    out_w = max(8, min(int(round(line.w * height / max(line.h, 1.0))), max_width))
    src = np.float32([c - u - v, c + u - v, c - u + v])
    dst = np.float32([[0, 0], [out_w, 0], [0, height]])
    m = cv2.getAffineTransform(src, dst)
    return cv2.warpAffine(image, m, (out_w, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _mean_in_contour(prob: np.ndarray, contour: np.ndarray) -> float:
    x, y, w, h = cv2.boundingRect(contour)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [contour.reshape(-1, 2) - (x, y)], 1)
    return float(cv2.mean(prob[y:y + h, x:x + w], mask)[0])


# -- the recogniser ---------------------------------------------------------------------------


class TextRecognizer:
    """PP-OCR's CRNN/SVTR recogniser (CTC): BGR crops of text lines -> (text, mean confidence)."""

    HEIGHT = 48

    def __init__(self, model: str | os.PathLike[str] | None = None, *, max_width: int = 320,
                 threads: int | None = None, providers: Sequence[str] | str = "cpu") -> None:
        self.model = str(model or embedded_model(REC_MODEL_NAME))
        self.max_width = max_width
        self.session = _session(self.model, threads, providers)
        self.input_name = self.session.get_inputs()[0].name
        meta = self.session.get_modelmeta().custom_metadata_map or {}
        chars = meta.get("character", "").splitlines()
        if not chars:
            raise ValueError(f"{self.model} carries no character list in its metadata")
        self.charset = ["", *chars, " "]  # CTC blank first; PaddleOCR appends the space

    def crop(self, image: np.ndarray, line: TextLine) -> np.ndarray:
        """The line deskewed and scaled to the recogniser's height (BGR)."""
        return crop_line(image, line, self.HEIGHT, self.max_width)

    def read(self, crops: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        if not crops:
            return []
        W = max(c.shape[1] for c in crops)
        batch = np.zeros((len(crops), 3, self.HEIGHT, W), np.float32)
        for i, c in enumerate(crops):
            if c.ndim == 2:
                c = cv2.cvtColor(c, cv2.COLOR_GRAY2BGR)
            batch[i, :, :, :c.shape[1]] = (c.astype(np.float32) * (2.0 / 255.0) - 1.0).transpose(2, 0, 1)
        probs = self.session.run(None, {self.input_name: batch})[0]
        out = []
        for p in probs:
            idx = p.argmax(axis=1)
            conf = p.max(axis=1)
            text, confs, prev = [], [], 0
            for k, c in zip(idx, conf):
                if k != 0 and k != prev and k < len(self.charset):
                    text.append(self.charset[k])
                    confs.append(float(c))
                prev = k
            out.append(("".join(text), float(np.mean(confs)) if confs else 0.0))
        return out


def text_plausibility(text: str, conf: float) -> float:
    """0..1: how much a read looks like a plate number (any country's: upper-case Latin letters
    and digits, 4 to 9 of them, separators allowed), weighted by the reader's confidence."""
    text = text.strip()
    if not text:
        return 0.0
    alnum = [c for c in text if c.isascii() and c.isalnum()]
    n = len(alnum)
    seps = sum(1 for c in text if c in SEPARATORS)
    clean = (n + seps) / len(text)  # share of the read that a plate can hold
    lower = sum(1 for c in alnum if c.islower()) / max(n, 1)
    digits = sum(1 for c in alnum if c.isdigit())
    s_len = {0: 0.0, 1: 0.02, 2: 0.08, 3: 0.35, 4: 0.75, 9: 0.8, 10: 0.45}.get(n, 1.0 if 5 <= n <= 8 else 0.15)
    s_mix = 1.0 if 0 < digits < n else (0.9 if digits == n and n >= 5 else 0.35)
    # camera overlays: dates and clock times are the most common digit strings in a frame
    s_stamp = 0.3 if DATE_TIME.search(text) else 1.0
    return float(s_len * s_mix * s_stamp * clean ** 2 * (1.0 - 0.6 * lower) * (0.5 + 0.5 * conf))


# -- candidates -------------------------------------------------------------------------------


@dataclass
class Candidate:
    line: TextLine
    members: tuple[int, ...]  # indices of the base lines it is made of, in reading order
    how: str  # line, merged, stacked, contours
    shape: float = 0.0
    text: str = ""
    textp: float = 0.0
    score: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _merge_lines(a: TextLine, b: TextLine) -> TextLine | None:
    """One line for two pieces of text side by side (``ABC`` + ``1234``), when they could be."""
    if abs(a.angle - b.angle) > 10:
        return None
    h = max(a.h, b.h)
    if min(a.h, b.h) < 0.7 * h or abs(a.cy - b.cy) > 0.3 * h:
        return None
    left, right = (a, b) if a.cx <= b.cx else (b, a)
    gap = (right.cx - right.w / 2) - (left.cx + left.w / 2)
    if gap > 0.6 * h:
        return None
    x1 = min(a.cx - a.w / 2, b.cx - b.w / 2)
    x2 = max(a.cx + a.w / 2, b.cx + b.w / 2)
    return TextLine((x1 + x2) / 2, (a.cy * a.w + b.cy * b.w) / (a.w + b.w), x2 - x1, h,
                    (a.angle * a.w + b.angle * b.w) / (a.w + b.w), min(a.score, b.score))


def _stack_lines(a: TextLine, b: TextLine) -> TextLine | None:
    """One candidate for the two rows of a two-line plate (similar width, one above the other)."""
    if abs(a.angle - b.angle) > 10:
        return None
    top, bottom = (a, b) if a.cy <= b.cy else (b, a)
    wmax = max(a.w, b.w)
    if min(a.w, b.w) < 0.45 * wmax or abs(a.cx - b.cx) > 0.25 * wmax:
        return None
    if min(a.h, b.h) < 0.5 * max(a.h, b.h):
        return None
    gap = (bottom.cy - bottom.h / 2) - (top.cy + top.h / 2)
    if gap > 0.4 * max(a.h, b.h) or gap < -0.5 * min(a.h, b.h):
        return None
    y1, y2 = top.cy - top.h / 2, bottom.cy + bottom.h / 2
    return TextLine((a.cx + b.cx) / 2, (y1 + y2) / 2, wmax, y2 - y1, (a.angle + b.angle) / 2, min(a.score, b.score))


def _satellite(a: TextLine, lines: Sequence[TextLine]) -> bool:
    """Whether ``a`` is small text hugging a much taller line (a plate's state name or frame)."""
    for b in lines:
        if b is a or b.h < 1.35 * a.h:
            continue
        if abs(a.cx - b.cx) > 0.6 * b.w:
            continue
        gap = abs(a.cy - b.cy) - (a.h + b.h) / 2
        if gap < 0.8 * b.h:
            return True
    return False


def _ramp(x: float, lo: float, hi: float) -> float:
    """0 below ``lo``, 1 above ``hi``, linear between."""
    if x <= lo:
        return 0.0
    if x >= hi:
        return 1.0
    return (x - lo) / (hi - lo)


def shape_score(line: TextLine, min_height: float) -> float:
    """0..1 from geometry and the detector's confidence only."""
    aspect = line.w / max(line.h, 1.0)
    s_aspect = _ramp(aspect, 1.0, 1.5) * (1.0 - _ramp(aspect, 6.5, 10.0))
    s_size = _ramp(line.h, min_height * 0.5, min_height * 1.5)
    s_tilt = 1.0 - _ramp(abs(line.angle), 25.0, 45.0)
    s_db = 0.5 + 0.5 * _ramp(line.score, 0.5, 0.8)
    return s_aspect * s_size * s_tilt * s_db


class PPOCRPlateDetector(Detector):
    """Plates from PP-OCR text lines, checked by reading them (see the module docstring)."""

    name = "ppocr-det"

    def __init__(self, *, det_model: str | None = None, rec_model: str | None = None, max_side: int = 960,
                 thresh: float = 0.3, box_thresh: float = 0.5, unclip_ratio: float = 1.6,
                 min_score: float = 0.3, relative: float = 0.5, plausible: float = 0.5, max_plates: int = 3,
                 read_top: int = 6, min_height: float = 16.0, max_height_frac: float = 0.35, verify: bool = True,
                 retry_enhanced: bool = True, classic_fallback: bool = True, refine_box: bool = True,
                 threads: int | None = None, providers: Sequence[str] | str = "cpu") -> None:
        self.db = DBTextDetector(det_model, max_side=max_side, thresh=thresh, box_thresh=box_thresh,
                                 unclip_ratio=unclip_ratio, threads=threads, providers=providers)
        self.rec = TextRecognizer(rec_model, threads=threads, providers=providers) if verify else None
        self.min_score = min_score
        self.relative = relative
        self.plausible = plausible
        self.max_plates = max_plates
        self.read_top = read_top
        self.min_height = min_height
        self.max_height_frac = max_height_frac
        self.retry_enhanced = retry_enhanced
        self.classic_fallback = classic_fallback
        self.refine_box = refine_box
        self.stats = {"frames": 0, "retries": 0, "fallbacks": 0}

    # -- Detector API --------------------------------------------------------------------------

    def warmup(self) -> None:
        image = np.full((480, 640, 3), 200, np.uint8)
        cv2.putText(image, "ABC 1234", (200, 250), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (20, 20, 20), 3)
        self.detect([image])

    def close(self) -> None:
        self.db.session = None
        if self.rec is not None:
            self.rec.session = None

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        if not images:
            return []
        probs = self.db.probability(images)
        return [self._detect_one(image, self.db.lines(*p)) for image, p in zip(images, probs)]

    # -- internals -----------------------------------------------------------------------------

    def candidates(self, image: np.ndarray) -> list[Candidate]:
        """Every scored candidate of one frame, best first (for tuning and debugging)."""
        prob = self.db.probability([image])[0]
        return self._candidates(image, self.db.lines(*prob), fallbacks=True)

    def _detect_one(self, image: np.ndarray, lines: list[TextLine]) -> list[Detection]:
        self.stats["frames"] += 1
        cands = self._candidates(image, lines, fallbacks=True)
        best = self._best(cands)
        # a frame's plates all read alike; text far below the best candidate is something else
        cands = [c for c in cands if c.score >= max(self.min_score, self.relative * best)]
        if not cands:
            return []
        boxes = np.array([c.line.box for c in cands], np.float32)
        keep = nms(boxes, np.array([c.score for c in cands], np.float32), 0.3, max_det=self.max_plates)
        H, W = image.shape[:2]
        out = []
        for i in keep:
            c = cands[i]
            x1, y1, x2, y2 = c.line.box
            box = (max(0.0, x1), max(0.0, y1), min(float(W), x2), min(float(H), y2))
            if self.refine_box:
                box = plate_extent(image, box)
            out.append(Detection(box, c.score, "plate", "plate", "contours" if c.how == "contours" else self.name))
        return out

    def _candidates(self, image: np.ndarray, lines: list[TextLine], fallbacks: bool) -> list[Candidate]:
        H = image.shape[0]
        cands = self._score(image, self._build(lines, H))
        if fallbacks and self.retry_enhanced and self._best(cands) < self.plausible:
            self.stats["retries"] += 1
            extra = self._enhanced_lines(image)
            known = [c.line.box for c in cands]
            fresh = [ln for ln in extra if all(box_iou(ln.box, k) < 0.7 for k in known)]
            if fresh:
                cands += self._score(image, self._build(fresh, H))
        if fallbacks and self.classic_fallback and self._best(cands) < self.plausible:
            self.stats["fallbacks"] += 1
            from .det_classic import plate_regions

            regions = plate_regions(image)
            lines_c = [TextLine.from_box(r.box, 0.5 + 0.5 * r.score) for r in regions]
            built = [Candidate(ln, (i,), "contours") for i, ln in enumerate(lines_c)]
            for c in built:
                c.shape = shape_score(c.line, self.min_height) * (0.5 + 0.5 * regions[c.members[0]].score)
            cands += self._read(image, lines_c, built)
        cands.sort(key=lambda c: -c.score)
        return cands

    @staticmethod
    def _best(cands: list[Candidate]) -> float:
        return max((c.score for c in cands), default=0.0)

    def _enhanced_lines(self, image: np.ndarray) -> list[TextLine]:
        """The DB pass on a contrast-stretched frame, a third larger (small or dim plates)."""
        lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB) if image.ndim == 3 else None
        if lab is not None:
            lab[:, :, 0] = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8)).apply(lab[:, :, 0])
            enhanced = cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)
        else:
            enhanced = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8)).apply(image)
        prob = self.db.probability([enhanced], max_side=int(self.db.max_side * 4 / 3))[0]
        return self.db.lines(*prob)

    def _build(self, lines: list[TextLine], frame_h: int) -> tuple[list[TextLine], list[Candidate]]:
        usable = [ln for ln in lines if ln.h <= self.max_height_frac * frame_h]
        cands: list[Candidate] = []
        for i, ln in enumerate(usable):
            s = shape_score(ln, self.min_height)
            if _satellite(ln, usable):
                s *= 0.5
            cands.append(Candidate(ln, (i,), "line", shape=s))
        for i, a in enumerate(usable):
            for j in range(i + 1, len(usable)):
                b = usable[j]
                m = _merge_lines(a, b)
                if m is not None:
                    order = (i, j) if a.cx <= b.cx else (j, i)
                    cands.append(Candidate(m, order, "merged", shape=shape_score(m, self.min_height)))
                st = _stack_lines(a, b)
                if st is not None:
                    order = (i, j) if a.cy <= b.cy else (j, i)
                    cands.append(Candidate(st, order, "stacked", shape=shape_score(st, self.min_height)))
        return usable, cands

    def _score(self, image: np.ndarray, built: tuple[list[TextLine], list[Candidate]]) -> list[Candidate]:
        lines, cands = built
        return self._read(image, lines, cands)

    def _read(self, image: np.ndarray, lines: list[TextLine], cands: list[Candidate]) -> list[Candidate]:
        """Read the lines the best-shaped candidates are made of; score every candidate."""
        cands = [c for c in cands if c.shape >= MIN_SHAPE]
        cands.sort(key=lambda c: -c.shape)
        if self.rec is None:
            for c in cands:
                c.score = c.shape
            return cands
        wanted: list[int] = []
        for c in cands:
            new = [m for m in c.members if m not in wanted]
            if len(wanted) + len(new) > self.read_top:
                break
            wanted.extend(new)
        reads = dict(zip(wanted, self.rec.read([self.rec.crop(image, lines[i]) for i in wanted])))
        for c in cands:
            if not all(m in reads for m in c.members):
                c.score = 0.0
                continue
            parts = [reads[m] for m in c.members]
            c.text = "".join(t for t, _ in parts)
            conf = float(np.mean([p for _, p in parts])) if parts else 0.0
            c.textp = text_plausibility(c.text, conf)
            c.score = math.sqrt(c.shape) * (0.1 + 0.9 * c.textp)
        return cands
