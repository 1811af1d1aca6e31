"""Multi-object tracking metrics: CLEAR-MOT (MOTA, MOTP, ID switches, fragmentation) and IDF1.

Feed one frame at a time, ground truth and predictions as ``{id: [x1, y1, x2, y2]}``::

    acc = MotAccumulator(iou_threshold=0.5)
    for gt, pred in frames:
        acc.update(gt, pred)
    print(acc.summary().to_dict())

Ids may be any hashable value; to score several cameras in one accumulator make them unique,
e.g. ``(camera_id, track_id)``. A ground-truth object absent from some frames (occluded, out of
view) is simply left out of those frames; its identity is still followed across the gap.

Definitions (Bernardin & Stiefelhagen 2008; Li et al. 2009; Ristani et al. 2016):

- per frame, a ground-truth object keeps the hypothesis it was last matched to while their IoU
  stays >= the threshold; the others are paired by Hungarian assignment on IoU (>= threshold);
- **IDSW**: a ground-truth object matched to a different hypothesis than the last one it was
  matched to (in any earlier frame); ``id_switches_after_gap`` counts those of them where the
  object, since it was last matched, was absent from the ground truth for more than
  ``gap_frames`` frames in a row (a tracker that forgets lost tracks after that many frames
  gives a new id by design);
- **fragmentation**: a ground-truth trajectory that was matched, then present but unmatched,
  then matched again (counted once per resumption);
- **MOTA** = 1 - (FN + FP + IDSW) / ground-truth boxes; **MOTP** = mean IoU of the matches;
- **IDF1** = 2 IDTP / (ground-truth boxes + predicted boxes), IDTP from the one-to-one
  assignment of whole trajectories that maximises the frames they match in;
- **mostly tracked / lost**: ground-truth trajectories matched in >= 80% / <= 20% of the frames
  they are present in.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Hashable, Iterable, Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["MotAccumulator", "TrackMetrics", "evaluate", "iou_matrix"]

Box = Sequence[float]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of each box of ``a`` (N, 4) with each box of ``b`` (M, 4), ``[x1, y1, x2, y2]``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0.0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0.0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0.0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


@dataclass
class TrackMetrics:
    frames: int
    gt_tracks: int
    pred_tracks: int
    gt_boxes: int
    pred_boxes: int
    matches: int
    false_positives: int
    misses: int
    id_switches: int
    id_switches_after_gap: int
    fragmentations: int
    mota: float
    motp: float
    idf1: float
    mostly_tracked: int
    mostly_lost: int

    @property
    def idsw_per_100(self) -> float:
        """Identity switches per 100 ground-truth trajectories."""
        return 100.0 * self.id_switches / self.gt_tracks if self.gt_tracks else 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "idsw_per_100": round(self.idsw_per_100, 3)}

    def __str__(self) -> str:
        return (
            f"GT tracks {self.gt_tracks}, predicted {self.pred_tracks}, IDSW {self.id_switches} "
            f"({self.idsw_per_100:.2f}/100 tracks, {self.id_switches_after_gap} after long gaps), Frag {self.fragmentations}, MOTA {self.mota:.3f}, "
            f"MOTP {self.motp:.3f}, IDF1 {self.idf1:.3f}, FP {self.false_positives}, FN {self.misses}, "
            f"MT {self.mostly_tracked}, ML {self.mostly_lost}"
        )


class MotAccumulator:
    """Collects per-frame matches; :meth:`summary` turns them into :class:`TrackMetrics`."""

    def __init__(self, iou_threshold: float = 0.5, gap_frames: int | None = None) -> None:
        self.iou_threshold = float(iou_threshold)
        self.gap_frames = gap_frames
        self.frames = 0
        self.gt_boxes = 0
        self.pred_boxes = 0
        self.matches = 0
        self.iou_sum = 0.0
        self.fp = 0
        self.fn = 0
        self.idsw = 0
        self.idsw_after_gap = 0
        self.frag = 0
        self.last_present: dict[Hashable, int] = {}  # gt id -> frame index it was last present in
        self.gap_since_match: dict[Hashable, int] = {}  # gt id -> longest absence since its last match
        self.last: dict[Hashable, Hashable] = {}  # gt id -> hypothesis it was last matched to
        self.interrupted: set[Hashable] = set()  # gt ids matched before, now unmatched
        self.present: dict[Hashable, int] = defaultdict(int)  # gt id -> frames present
        self.tracked: dict[Hashable, int] = defaultdict(int)  # gt id -> frames matched
        self.pred_ids: set[Hashable] = set()
        self.pair_frames: dict[tuple[Hashable, Hashable], int] = defaultdict(int)  # for IDF1
        self.pred_frames: dict[Hashable, int] = defaultdict(int)

    def update(self, gt: Mapping[Hashable, Box], pred: Mapping[Hashable, Box]) -> list[tuple[Hashable, Hashable]]:
        """Score one frame; returns its (gt id, predicted id) matches."""
        thr = self.iou_threshold
        gids, pids = list(gt), list(pred)
        self.frames += 1
        self.gt_boxes += len(gids)
        self.pred_boxes += len(pids)
        for g in gids:
            self.present[g] += 1
            last = self.last_present.get(g)
            if last is not None:
                self.gap_since_match[g] = max(self.gap_since_match.get(g, 0), self.frames - last - 1)
            self.last_present[g] = self.frames
        for p in pids:
            self.pred_ids.add(p)
            self.pred_frames[p] += 1
        ious = iou_matrix([gt[g] for g in gids], [pred[p] for p in pids])
        for gi, pi in zip(*np.nonzero(ious >= thr)):
            self.pair_frames[(gids[gi], pids[pi])] += 1

        matched: list[tuple[int, int]] = []
        free_g, free_p = set(range(len(gids))), set(range(len(pids)))
        pindex = {p: i for i, p in enumerate(pids)}
        # keep last correspondences that are still valid
        for gi, g in enumerate(gids):
            pi = pindex.get(self.last.get(g, _NONE), -1)
            if pi >= 0 and pi in free_p and ious[gi, pi] >= thr:
                matched.append((gi, pi))
                free_g.discard(gi)
                free_p.discard(pi)
        # pair the rest by maximum total IoU among pairs above the threshold
        if free_g and free_p:
            rows, cols = sorted(free_g), sorted(free_p)
            sub = ious[np.ix_(rows, cols)]
            weight = np.where(sub >= thr, -sub, 0.0)
            for r, c in zip(*linear_sum_assignment(weight)):
                if sub[r, c] >= thr:
                    gi, pi = rows[r], cols[c]
                    matched.append((gi, pi))
                    free_g.discard(gi)
                    free_p.discard(pi)
                    g, p = gids[gi], pids[pi]
                    if g in self.last and self.last[g] != p:
                        self.idsw += 1
                        if self.gap_frames is not None and self.gap_since_match.get(g, 0) > self.gap_frames:
                            self.idsw_after_gap += 1

        out = []
        for gi, pi in matched:
            g, p = gids[gi], pids[pi]
            self.last[g] = p
            self.gap_since_match[g] = 0
            self.tracked[g] += 1
            self.matches += 1
            self.iou_sum += float(ious[gi, pi])
            if g in self.interrupted:
                self.frag += 1
                self.interrupted.discard(g)
            out.append((g, p))
        for gi in free_g:
            if gids[gi] in self.last:
                self.interrupted.add(gids[gi])
        self.fn += len(free_g)
        self.fp += len(free_p)
        return out

    def summary(self) -> TrackMetrics:
        gt_tracks = len(self.present)
        ratios = [self.tracked[g] / n for g, n in self.present.items()]
        return TrackMetrics(
            frames=self.frames,
            gt_tracks=gt_tracks,
            pred_tracks=len(self.pred_ids),
            gt_boxes=self.gt_boxes,
            pred_boxes=self.pred_boxes,
            matches=self.matches,
            false_positives=self.fp,
            misses=self.fn,
            id_switches=self.idsw,
            id_switches_after_gap=self.idsw_after_gap,
            fragmentations=self.frag,
            mota=1.0 - (self.fn + self.fp + self.idsw) / self.gt_boxes if self.gt_boxes else 0.0,
            motp=self.iou_sum / self.matches if self.matches else 0.0,
            idf1=self._idf1(),
            mostly_tracked=sum(r >= 0.8 for r in ratios),
            mostly_lost=sum(r <= 0.2 for r in ratios),
        )

    def _idf1(self) -> float:
        total = self.gt_boxes + self.pred_boxes
        if not total:
            return 0.0
        if not self.pair_frames:
            return 0.0
        gids = sorted({g for g, _ in self.pair_frames}, key=repr)
        pids = sorted({p for _, p in self.pair_frames}, key=repr)
        gi = {g: i for i, g in enumerate(gids)}
        pi = {p: i for i, p in enumerate(pids)}
        overlap = np.zeros((len(gids), len(pids)))
        for (g, p), n in self.pair_frames.items():
            overlap[gi[g], pi[p]] = n
        rows, cols = linear_sum_assignment(-overlap)
        idtp = float(overlap[rows, cols].sum())
        return 2.0 * idtp / total


_NONE = object()


def evaluate(
    frames: Iterable[tuple[Mapping[Hashable, Box], Mapping[Hashable, Box]]],
    iou_threshold: float = 0.5,
    gap_frames: int | None = None,
) -> TrackMetrics:
    """Metrics of a whole sequence given as ``(ground truth, predictions)`` pairs per frame."""
    acc = MotAccumulator(iou_threshold, gap_frames)
    for gt, pred in frames:
        acc.update(gt, pred)
    return acc.summary()
