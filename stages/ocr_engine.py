"""Reading plates: crop, read, correct with region formats, and try harder only while unsure.

:class:`PlateOCR` reads all plates of a frame together. Every plate starts with one read of its
box grown by ``margin``; a plate whose best read is not yet *accepted* (valid for a configured
region, or no regions configured, and at least ``accept_confidence`` confident) goes through the
strategies in order of cost, one batch per strategy, until it is:

======== =====================================================================================
pad      the box grown less and more than ``margin`` (a detector box that cut a character off,
         or one so loose the plate is small in it)
rectify  the plate warped flat from its outline (perspective), else rotated by the tilt of its
         character row
clahe    local contrast (dark, hazy, back-lit plates)
upscale  plates lower than ``upscale_below`` px enlarged (bicubic + unsharp mask)
denoise  non-local-means denoising (night noise, compression blocks)
two_line the two rows of a two-line plate read one by one and joined
======== =====================================================================================

Every read is corrected against the regions (see :mod:`alpr_topo.stages.regions`); the plate's
answer is a vote over all its reads: each corrected text scores
``confidence * exp(-cost / 2)``, reads that fit no region count ``invalid_weight`` as much.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from . import ocr_prep as prep
from .ocr_readers import Read, Reader
from .regions import SHAPE_WEIGHT, Correction, RegionSet, TextScorer, normalize

__all__ = ["Attempt", "PlateOCR", "PlateResult", "STRATEGIES"]

STRATEGIES = ("pad", "rectify", "clahe", "upscale", "denoise", "two_line")


@dataclass
class Attempt:
    """One read of one variant of a plate, and what the regions made of it."""

    strategy: str
    read: Read
    correction: Correction
    score: float = 0.0

    @property
    def text(self) -> str:
        return self.correction.text


@dataclass
class PlateResult:
    text: str  # the reader's raw text of the attempt that won
    normalized: str  # corrected / normalised text
    confidence: float
    region: str | None
    reader: str
    strategy: str
    attempts: list[Attempt] = field(default_factory=list)
    crop: np.ndarray | None = None  # the base crop (BGR), for crop_jpeg and quality


class PlateOCR:
    """Reads plates out of frames (see the module doc)."""

    def __init__(self, reader: Reader, regions: RegionSet | None = None, *, region_mode: str = "prefer",
                 margin: float = 0.1, accept_confidence: float = 0.75, max_correction_cost: float = 4.0,
                 strategies: Sequence[str] = STRATEGIES, upscale_below: int = 32, invalid_weight: float = 0.3,
                 pad_margins: Sequence[float] = (0.04, 0.18), strategy_reader: Reader | None = None,
                 shape_weight: float = SHAPE_WEIGHT) -> None:
        if region_mode not in ("prefer", "require", "off"):
            raise ValueError(f"region_mode must be prefer, require or off, got {region_mode!r}")
        unknown = [s for s in strategies if s not in STRATEGIES]
        if unknown:
            raise ValueError(f"unknown strategies {unknown}; known: {', '.join(STRATEGIES)}")
        self.reader = reader
        self.strategy_reader = strategy_reader or reader  # what reads the strategies' variants
        self.regions = regions if regions is not None and len(regions) else None
        self.region_mode = region_mode if self.regions is not None else "off"
        self.margin = margin
        self.accept_confidence = accept_confidence
        self.max_cost = max_correction_cost
        self.strategies = list(strategies)
        self.upscale_below = upscale_below
        self.invalid_weight = invalid_weight
        self.pad_margins = tuple(pad_margins)
        self.shape_weight = shape_weight
        self.timings: dict[str, float] = {}

    # -- correction and scoring --------------------------------------------------------------------

    def correct(self, read: Read, aspect: float | None = None, *, own_scores: bool = True) -> Correction:
        """``read`` against the regions; ``aspect`` (the plate box's width / height) weighs
        regions by the shape of their plates. ``own_scores`` False prices changes by the regions'
        look-alike pairs instead of the read's score table."""
        if self.region_mode == "off" or self.regions is None:
            text = normalize(read.text)
            return Correction(text, [], 0.0, 0, raw=text)
        return self.regions.correct(read.text, read.char_confidences, scorer=read.scorer if own_scores else None,
                                    max_cost=self.max_cost, countries=read.countries, aspect=aspect,
                                    shape_weight=self.shape_weight)

    def _score(self, a: Attempt) -> float:
        if not a.correction.text:
            return 0.0
        conf = a.read.confidence * math.exp(-a.correction.cost / 2.0)
        if self.region_mode != "off" and not a.correction.valid:
            conf *= self.invalid_weight
        return conf

    def accepted(self, attempts: Sequence[Attempt]) -> bool:
        """Whether the plate's reads so far are good enough to stop trying."""
        if not attempts:
            return False
        best = max(attempts, key=lambda a: a.score)
        valid = best.correction.valid or self.region_mode == "off"
        return valid and self._confidence(best) >= self.accept_confidence

    @staticmethod
    def _confidence(a: Attempt) -> float:
        n = max(len(a.correction.text), 1)
        return float(a.read.confidence * math.exp(-a.correction.cost / n))

    # -- variants ----------------------------------------------------------------------------------

    def variants(self, strategy: str, frame: np.ndarray, box: Sequence[float], base: np.ndarray) -> list[np.ndarray]:
        if strategy == "pad":
            return [prep.crop_box(frame, box, m) for m in self.pad_margins]
        if strategy == "rectify":
            out = prep.rectify(prep.crop_box(frame, box, max(self.margin, 0.15)))
            return [out] if out is not None and out.size else []
        if strategy == "clahe":
            return [prep.clahe(base)]
        if strategy == "upscale":
            if base.shape[0] >= self.upscale_below:
                return []
            return [prep.upscale(base, max(2 * base.shape[0], self.upscale_below))]
        if strategy == "denoise":
            return [prep.denoise(base)]
        return []

    # -- reading -----------------------------------------------------------------------------------

    def read_frame(self, frame: np.ndarray, boxes: Sequence[Sequence[float]]) -> list[PlateResult]:
        """One result per box, in order."""
        if not boxes:
            return []
        bases = [prep.crop_box(frame, b, self.margin) for b in boxes]
        aspects = [_aspect(b) for b in boxes]
        attempts: list[list[Attempt]] = [[] for _ in boxes]
        self._run("base", [(i, c) for i, c in enumerate(bases)], attempts, aspects)
        for strategy in self.strategies:
            todo = [i for i in range(len(boxes)) if not self.accepted(attempts[i])]
            if not todo:
                break
            if strategy == "two_line":
                for i in todo:
                    self._two_line(i, bases[i], attempts, aspects[i])
                continue
            jobs = [(i, v) for i in todo for v in self.variants(strategy, frame, boxes[i], bases[i])]
            self._run(strategy, jobs, attempts, aspects)
        return [self._result(attempts[i], bases[i]) for i in range(len(boxes))]

    def read_crops(self, crops: Sequence[np.ndarray]) -> list[PlateResult]:
        """Like :meth:`read_frame` for crops that are already cut out (the crop is the frame)."""
        out = []
        for crop in crops:
            h, w = crop.shape[:2]
            out.extend(self.read_frame(crop, [[0, 0, w, h]]))
        return out

    def _run(self, strategy: str, jobs: list[tuple[int, np.ndarray]], attempts: list[list[Attempt]],
             aspects: Sequence[float | None]) -> None:
        jobs = [(i, c) for i, c in jobs if c is not None and c.size and min(c.shape[:2]) >= 4]
        if not jobs:
            return
        t0 = time.perf_counter()
        reader = self.reader if strategy == "base" else self.strategy_reader
        reads = reader.read([c for _, c in jobs])
        t1 = time.perf_counter()
        for (i, _), read in zip(jobs, reads):
            a = Attempt(strategy, read, self.correct(read, aspects[i]))
            a.score = self._score(a)
            attempts[i].append(a)
        t2 = time.perf_counter()
        self.timings["read"] = self.timings.get("read", 0.0) + (t1 - t0)
        self.timings["correct"] = self.timings.get("correct", 0.0) + (t2 - t1)

    def _two_line(self, i: int, base: np.ndarray, attempts: list[list[Attempt]], aspect: float | None) -> None:
        rows = prep.split_rows(base)
        if rows is None:
            return
        reads = self.strategy_reader.read(rows)
        text = "".join(r.text for r in reads)
        confs = [c for r in reads for c in r.char_confidences]
        conf = float(np.prod([r.confidence for r in reads])) ** (1.0 / len(reads)) if reads else 0.0
        read = Read(text, confs, conf, reads[0].reader if reads else "", scorer=TextScorer(normalize(text), confs),
                    countries=reads[0].countries if reads else None, extra={"rows": [r.text for r in reads]})
        # the joined text has no score table of the reader's: correct it from look-alike pairs
        a = Attempt("two_line", read, self.correct(read, aspect, own_scores=False))
        a.score = self._score(a)
        attempts[i].append(a)

    def _result(self, attempts: list[Attempt], base: np.ndarray) -> PlateResult:
        if not attempts:
            return PlateResult("", "", 0.0, None, self.reader.name, "none", [], base)
        votes: dict[str, float] = {}
        for a in attempts:
            if a.correction.text:
                votes[a.correction.text] = votes.get(a.correction.text, 0.0) + a.score
        if not votes:
            first = attempts[0]
            return PlateResult(first.read.text, "", 0.0, None, self.reader.name, first.strategy, attempts, base)
        winner = max(votes, key=lambda t: votes[t])
        best = max((a for a in attempts if a.correction.text == winner), key=lambda a: a.score)
        valid = best.correction.valid
        # the reported confidence is the read's own: a plate that fits no region (a vanity plate)
        # says so with region None, and keeps the confidence the reader had in it
        confidence = self._confidence(best)
        if self.region_mode == "require" and not valid:
            return PlateResult(best.read.text, "", 0.0, None, best.read.reader or self.reader.name, best.strategy,
                               attempts, base)
        return PlateResult(best.read.text, winner, round(min(1.0, confidence), 4), best.correction.region,
                           best.read.reader or self.reader.name, best.strategy, attempts, base)


def _aspect(box: Sequence[float]) -> float | None:
    """Width / height of an ``[x1, y1, x2, y2]`` box, None when degenerate."""
    w, h = float(box[2]) - float(box[0]), float(box[3]) - float(box[1])
    return w / h if w > 0 and h > 0 else None
