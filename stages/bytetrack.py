"""ByteTrack (Zhang et al., ECCV 2022) for one camera and one kind of object, in numpy/scipy.

Per frame:

1. Predict every live track with a constant-velocity Kalman filter, once per frame that passed
   since the last call (gaps in the frame ids are predicted across).
2. Split the detections by score: *high* (``>= high_thresh``) and *low* (``low_thresh`` up to
   ``high_thresh``); lower scores are ignored.
3. First association: confirmed tracks (tracked and lost) against the high detections. Cost
   ``1 - similarity``, similarity the IoU of the predicted box (times the detection score with
   ``fuse_score``); Hungarian assignment (``scipy.optimize.linear_sum_assignment``), pairs with
   a cost above ``match_thresh`` rejected.
4. Second association: the tracks still unmatched against the low detections (plain IoU,
   ``second_match_thresh``). This keeps an object through partial occlusion and motion blur,
   where the detector is unsure, while low-score clutter never starts a track. The reference
   code offers the low detections only to tracks matched in the previous frame; with
   ``second_match_lost`` (the default) lost tracks take part too, so an object coming out from
   behind something, half visible, is re-found at once. Tracks left unmatched become *lost*.
5. Unconfirmed tracks (fewer than ``min_hits`` hits) against the high detections left over
   (``unconfirmed_match_thresh``); unmatched ones are dropped.
6. Every high detection still unmatched scoring ``>= new_track_thresh`` starts an unconfirmed
   track.
7. Confirmed tracks not matched for more than ``max_time_lost`` frames are removed.

Ids: a track gets its id only when it is confirmed, from a counter the caller provides, so the
ids a camera reports are consecutive and never reused. A track about to be confirmed that lies
on a lost track (overlapping it by half and moving alike, or overlapping it by
``duplicate_iou``) is that object re-found: the lost track continues with its old id. A tracked
and a lost track on the same spot, moving alike, are merged into the older id.

Additions for licence plates and the vehicles carrying them (each can be turned off):

- *Centre fallback* for small boxes. A plate near the camera moves its own height or more per
  frame, so the IoU of a correct pair can be zero, above all while a track is young and its
  speed unknown. For tracks whose size (geometric mean of width and height) is below
  ``tiny_box_size`` the similarity is the larger of the IoU and
  ``(1 - d / (center_gate * size)) * (width ratio) * (height ratio)``, ``d`` the distance of
  the centres (``center_gate=0`` turns it off). With ``center_all`` (the stage sets it for
  plates) every track gets the fallback whatever its size, and the radius of a track that is
  not lost grows by ``SIGMAS`` standard deviations of its predicted centre (wide while the
  speed is unknown: a plate at 5 fps moves most of its width per frame).
- *Groups*: detections may name the object that contains them (for a plate: the track id of its
  vehicle). A track never takes a detection of another group while its own group is still
  followed, so a plate track does not jump to the plate of the vehicle passing in front.
- *Low-score rescue*: in the first association a track skips a high-score detection when a
  low-score one fits its prediction far better (``low_rescue_margin`` more IoU): that one is the
  half-hidden object itself, the high-score box is whatever hides it.
- *Frame border*: predicted boxes are cut at the frame's border (``bounds``) before they are
  compared, as detectors cut the boxes of objects entering or leaving the view.
- An optional Mahalanobis gate (``gate``) on the Kalman innovation, off by default: it helps
  smooth traffic and hurts where boxes jump (perspective, borders, low frame rates).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Container, Hashable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from .kalman import MIN_SIZE, BoxKalmanFilter, cxcywh_to_xyxy, xyxy_to_cxcywh

__all__ = ["TrackerConfig", "Track", "ByteTracker", "iou_matrix", "assign", "NEW", "TRACKED", "LOST", "REMOVED"]

NEW, TRACKED, LOST, REMOVED = "new", "tracked", "lost", "removed"
SIGMAS = 2.0  # plates: the centre radius grows by this many standard deviations of the prediction


@dataclass
class TrackerConfig:
    """Settings of one tracker (the stage's parameters, see docs/track.md). Costs are
    ``1 - similarity``; a pair matches when its cost is at most the threshold
    (``match_thresh=0.8`` accepts a similarity >= 0.2)."""

    high_thresh: float = 0.5
    low_thresh: float = 0.1
    new_track_thresh: float = 0.6
    match_thresh: float = 0.8
    second_match_thresh: float = 0.5
    unconfirmed_match_thresh: float = 0.7
    fuse_score: bool = True
    max_time_lost: int = 30
    min_hits: int = 2
    center_gate: float = 2.0
    tiny_box_size: float = 48.0
    duplicate_iou: float = 0.85
    gate: float = 0.0
    low_rescue_margin: float = 0.2
    second_match_lost: bool = True
    std_weight_position: float = 1.0 / 20
    std_weight_velocity: float = 1.0 / 160
    init_velocity_std: float = 32.0
    velocity_noise: float = 0.2
    center_all: bool = False  # the centre fallback for boxes of every size (plates)


@dataclass(eq=False)
class Track:
    """One object followed over frames. ``track_id`` is None until the track is confirmed."""

    mean: np.ndarray  # (8,) Kalman state
    cov: np.ndarray  # (8, 8)
    start_frame: int
    last_frame: int  # frame of the last matched detection
    score: float
    state: str = NEW
    hits: int = 1
    track_id: int | None = None
    labels: dict[str, float] = field(default_factory=dict)
    detection: int | None = None  # index of the detection matched in the current frame
    group: Hashable | None = None  # the containing object last seen (a plate's vehicle track)
    _row: int = field(default=-1, repr=False)  # row in the tracker's stacked state this frame

    @property
    def confirmed(self) -> bool:
        return self.track_id is not None

    @property
    def box(self) -> list[float]:
        """The Kalman box ``[x1, y1, x2, y2]`` (updated if matched this frame, else predicted)."""
        cx, cy, w, h = self.mean[:4].tolist()
        w, h = max(w, MIN_SIZE) / 2.0, max(h, MIN_SIZE) / 2.0
        return [cx - w, cy - h, cx + w, cy + h]

    @property
    def label(self) -> str:
        """The label with the largest summed detection score over the track's life."""
        return max(self.labels.items(), key=lambda kv: kv[1])[0] if self.labels else ""

    def add_label(self, label: str | None, score: float) -> None:
        if label:
            self.labels[label] = self.labels.get(label, 0.0) + score


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), ``[x1, y1, x2, y2]``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    ax1, ay1, ax2, ay2 = a[:, 0:1], a[:, 1:2], a[:, 2:3], a[:, 3:4]
    bx1, by1, bx2, by2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    iw = np.minimum(ax2, bx2) - np.maximum(ax1, bx1)
    ih = np.minimum(ay2, by2) - np.maximum(ay1, by1)
    inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    area_a = np.maximum(ax2 - ax1, 0.0) * np.maximum(ay2 - ay1, 0.0)
    area_b = np.maximum(bx2 - bx1, 0.0) * np.maximum(by2 - by1, 0.0)
    union = area_a + area_b - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def assign(cost: np.ndarray, thresh: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Minimum-cost matching keeping only pairs with ``cost <= thresh``.

    Solved as a maximum-weight matching with weights ``thresh - cost`` (pairs above the threshold
    weigh nothing and are dropped afterwards): the same optimum as the LAPJV-with-cost-limit call
    of the reference implementation. Returns (matches, unmatched rows, unmatched columns).
    """
    n, m = cost.shape
    if n == 0 or m == 0:
        return [], list(range(n)), list(range(m))
    weight = np.where(cost <= thresh, cost - thresh, 0.0)
    rows, cols = linear_sum_assignment(weight)
    matches = [(int(r), int(c)) for r, c in zip(rows, cols) if cost[r, c] <= thresh]
    matched_r = {r for r, _ in matches}
    matched_c = {c for _, c in matches}
    return matches, [r for r in range(n) if r not in matched_r], [c for c in range(m) if c not in matched_c]


@dataclass
class _Frame:
    """The detections of the frame being associated."""

    boxes: np.ndarray  # (N, 4)
    scores: np.ndarray  # (N,)
    labels: list[str | None]
    groups: list[Hashable | None]
    live_groups: Container[Hashable] | None
    bounds: tuple[float, float] | None  # (width, height) of the frame: predicted boxes are clipped to it
    owner: list[Track | None]  # per detection: the track that took it


class ByteTracker:
    """ByteTrack state for one stream of detections (one camera, one kind).

    ``next_id`` hands out track ids; sharing one between trackers (one per kind of a camera)
    keeps ids unique within the camera. After ``update``, ``started`` and ``ended`` list the
    tracks confirmed and the confirmed tracks removed in that call.
    """

    def __init__(self, config: TrackerConfig | None = None, next_id: Callable[[], int] | None = None) -> None:
        self.config = config or TrackerConfig()
        cfg = self.config
        self.kf = BoxKalmanFilter(cfg.std_weight_position, cfg.std_weight_velocity,
                                  init_velocity_std_px=cfg.init_velocity_std, velocity_noise_px=cfg.velocity_noise)
        if next_id is None:
            counter = iter(range(1, 1 << 62))
            next_id = lambda: next(counter)  # noqa: E731
        self.next_id = next_id
        self.tracks: list[Track] = []  # every live track: new, tracked and lost
        self.frame_id: int | None = None
        self.started: list[Track] = []
        self.ended: list[Track] = []

    # -- queries -------------------------------------------------------------------------------

    def active(self, include_lost: bool = False) -> list[Track]:
        """Confirmed tracks matched in the current frame (and lost ones if asked), oldest first."""
        states = (TRACKED, LOST) if include_lost else (TRACKED,)
        return [t for t in self.tracks if t.confirmed and t.state in states]

    def find(self, track_id: int) -> Track | None:
        return next((t for t in self.tracks if t.track_id == track_id), None)

    def clear(self) -> list[Track]:
        """Drop every track (e.g. the camera restarted); returns the confirmed ones removed."""
        ended = [t for t in self.tracks if t.confirmed]
        for t in self.tracks:
            t.state = REMOVED
        self.tracks = []
        self.frame_id = None
        return ended

    # -- one frame -----------------------------------------------------------------------------

    def update(
        self,
        frame_id: int,
        boxes: np.ndarray | Sequence[Sequence[float]],
        scores: np.ndarray | Sequence[float],
        labels: Sequence[str | None] | None = None,
        groups: Sequence[Hashable | None] | None = None,
        live_groups: Container[Hashable] | None = None,
        bounds: tuple[float, float] | None = None,
    ) -> list[Track | None]:
        """Advance to ``frame_id`` and associate its detections.

        ``groups`` optionally names, per detection, the object that contains it (for plates: the
        track id of their vehicle). A track remembers the last group it was matched in and never
        takes a detection of another group while its own group is in ``live_groups`` (all
        groups count as live when that is None): a plate does not jump to the vehicle in front.

        ``bounds`` is the frame's ``(width, height)``: detectors report boxes cut at the image
        border, so predicted boxes are cut the same way before they are compared (an object
        leaving the frame keeps matching its shrinking box).

        Returns, per detection, the confirmed track it belongs to, or None (ignored as too
        unsure, matched to a still unconfirmed track, or unmatched).
        """
        cfg = self.config
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        n = len(boxes)
        f = _Frame(
            boxes=boxes,
            scores=np.asarray(scores, dtype=np.float64).reshape(-1),
            labels=list(labels) if labels is not None else [None] * n,
            groups=list(groups) if groups is not None else [None] * n,
            live_groups=live_groups,
            bounds=bounds,
            owner=[None] * n,
        )
        self.started, self.ended = [], []

        steps = 1 if self.frame_id is None else frame_id - self.frame_id
        steps = max(1, min(steps, cfg.max_time_lost + 2))  # beyond the buffer every track dies anyway
        self.frame_id = frame_id
        for t in self.tracks:
            t.detection = None
        self._expire()
        self._predict(steps)

        high = np.flatnonzero(f.scores >= cfg.high_thresh)
        low = np.flatnonzero((f.scores >= cfg.low_thresh) & (f.scores < cfg.high_thresh))
        confirmed = [t for t in self.tracks if t.confirmed]
        unconfirmed = [t for t in self.tracks if not t.confirmed]

        # 1. confirmed tracks (tracked and lost) against high-score detections
        sim = self._similarity(confirmed, high, f)
        if cfg.low_rescue_margin > 0 and len(low) and confirmed:
            # a low-score box that fits the prediction far better than any high-score one is the
            # object itself, half hidden; the high-score box is whatever hides it
            best_low = self._similarity(confirmed, low, f).max(axis=1, keepdims=True)
            keep_for_low = (best_low >= 1.0 - cfg.second_match_thresh) & (sim < best_low - cfg.low_rescue_margin)
            sim[keep_for_low] = 0.0
        if cfg.fuse_score:
            sim = sim * f.scores[high][None, :]
        matches, u_trk, u_high = assign(1.0 - sim, cfg.match_thresh)
        self._match([(confirmed[ti], int(high[di])) for ti, di in matches], f)

        # 2. tracks still unmatched (those tracked in the previous frame, and lost ones if
        #    second_match_lost) against low-score detections
        remaining = [confirmed[i] for i in u_trk if cfg.second_match_lost or confirmed[i].state == TRACKED]
        matches, u_rem, _ = assign(1.0 - self._similarity(remaining, low, f), cfg.second_match_thresh)
        self._match([(remaining[ti], int(low[di])) for ti, di in matches], f)
        for i in u_rem:
            remaining[i].state = LOST

        # 3. unconfirmed tracks against the high-score detections left over
        left = high[u_high]
        sim = self._similarity(unconfirmed, left, f)
        if cfg.fuse_score:
            sim = sim * f.scores[left][None, :]
        matches, u_unc, u_left = assign(1.0 - sim, cfg.unconfirmed_match_thresh)
        self._match([(unconfirmed[ti], int(left[di])) for ti, di in matches], f)
        for i in u_unc:
            unconfirmed[i].state = REMOVED

        # 4. new tracks from confident detections nobody claimed
        fresh = [int(left[i]) for i in u_left if f.scores[left[i]] >= cfg.new_track_thresh]
        if fresh:
            mean, cov = self.kf.initiate(xyxy_to_cxcywh(boxes[fresh]))
            for k, di in enumerate(fresh):
                score = float(f.scores[di])
                t = Track(mean[k], cov[k], start_frame=frame_id, last_frame=frame_id, score=score,
                          group=f.groups[di])
                t.add_label(f.labels[di], score)
                t.detection = di
                f.owner[di] = t
                self.tracks.append(t)
                if cfg.min_hits <= 1:
                    self._confirm(t, f)

        self._remove_duplicates(f)
        self.tracks = [t for t in self.tracks if t.state != REMOVED]
        return [t if t is not None and t.confirmed and t.state == TRACKED else None for t in f.owner]

    # -- internals -----------------------------------------------------------------------------

    def _expire(self) -> None:
        """Remove confirmed tracks unseen for longer than the buffer (counting skipped frames)."""
        assert self.frame_id is not None
        keep = []
        for t in self.tracks:
            if t.confirmed and self.frame_id - t.last_frame > self.config.max_time_lost:
                t.state = REMOVED
                self.ended.append(t)
            else:
                keep.append(t)
        self.tracks = keep

    def _predict(self, steps: int) -> None:
        """Advance every track; ``self._mean``/``self._cov`` hold the stacked states (row
        ``t._row`` of each track) until the end of the frame."""
        for k, t in enumerate(self.tracks):
            t._row = k
        if not self.tracks:
            self._mean, self._cov = np.zeros((0, 8)), np.zeros((0, 8, 8))
            return
        mean = np.stack([t.mean for t in self.tracks])
        cov = np.stack([t.cov for t in self.tracks])
        for _ in range(steps):
            mean, cov = self.kf.predict(mean, cov)
        self._mean, self._cov = mean, cov
        for k, t in enumerate(self.tracks):
            t.mean, t.cov = mean[k], cov[k]

    def _similarity(self, tracks: list[Track], dets: np.ndarray, f: _Frame) -> np.ndarray:
        """Track-by-detection similarity in [0, 1]: IoU of the predicted box, the centre fallback
        for tiny boxes, zero across groups and outside the Mahalanobis gate."""
        if not tracks or len(dets) == 0:
            return np.zeros((len(tracks), len(dets)))
        cfg = self.config
        det_boxes = f.boxes[dets]
        state = self._mean[[t._row for t in tracks], :4]
        predicted = cxcywh_to_xyxy(state)
        if f.bounds is not None:
            np.clip(predicted, 0.0, np.array([f.bounds[0], f.bounds[1], f.bounds[0], f.bounds[1]]), out=predicted)
        sim = iou_matrix(predicted, det_boxes)
        if cfg.gate > 0:
            sim[self._mahalanobis(tracks, predicted, det_boxes) > cfg.gate] = 0.0
        if cfg.center_gate > 0:
            scale = np.sqrt(state[:, 2] * state[:, 3])  # geometric mean of width and height
            tiny = np.ones(len(tracks), bool) if cfg.center_all else scale < cfg.tiny_box_size
            if tiny.any():
                rows = [t._row for t, small in zip(tracks, tiny) if small]
                det = xyxy_to_cxcywh(det_boxes)
                t = state[tiny]
                base = cfg.center_gate * scale[tiny][:, None]
                rx = ry = base
                if cfg.center_all:
                    # plates: the radius grows by the prediction's own uncertainty (SIGMAS standard
                    # deviations of the centre): wide for a young track whose speed is unknown, a
                    # few pixels more for a settled one. Not for lost tracks: their uncertainty
                    # grows with every frame unseen, and a plate entering elsewhere is no reason
                    # to re-find them far from where they were
                    _, S = self.kf.project(self._mean[rows], self._cov[rows])
                    grow = SIGMAS * np.array([t.state != LOST for t, small in zip(tracks, tiny) if small], float)
                    rx = base + (grow * np.sqrt(S[:, 0, 0]))[:, None]
                    ry = base + (grow * np.sqrt(S[:, 1, 1]))[:, None]
                dist = np.hypot((t[:, None, 0] - det[None, :, 0]) / rx, (t[:, None, 1] - det[None, :, 1]) / ry)
                tw, th = t[:, 2:3], t[:, 3:4]
                dw, dh = np.maximum(det[None, :, 2], 1e-9), np.maximum(det[None, :, 3], 1e-9)
                shape = (np.minimum(tw, dw) / np.maximum(tw, dw)) * (np.minimum(th, dh) / np.maximum(th, dh))
                centre = np.clip(1.0 - dist, 0.0, 1.0) * shape
                sim[tiny] = np.maximum(sim[tiny], centre)
        det_groups = [f.groups[di] for di in dets]
        if any(g is not None for g in det_groups):
            for i, t in enumerate(tracks):
                if self._group_live(t.group, f):
                    for j, g in enumerate(det_groups):
                        if g is not None and g != t.group:
                            sim[i, j] = 0.0
        return sim

    def _mahalanobis(self, tracks: list[Track], predicted: np.ndarray, det_boxes: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of every detection from every track's predicted box
        (``(cx, cy, w, h)``, with the innovation covariance of the Kalman filter)."""
        rows = [t._row for t in tracks]
        _, S = self.kf.project(self._mean[rows], self._cov[rows])
        innovation = xyxy_to_cxcywh(det_boxes)[None, :, :] - xyxy_to_cxcywh(predicted)[:, None, :]
        S_inv = np.linalg.inv(S)
        return np.einsum("nmi,nij,nmj->nm", innovation, S_inv, innovation)

    @staticmethod
    def _group_live(group: Hashable | None, f: _Frame) -> bool:
        return group is not None and (f.live_groups is None or group in f.live_groups)

    def _match(self, pairs: list[tuple[Track, int]], f: _Frame) -> None:
        """Correct each track with its detection (one batched Kalman update); a lost track
        becomes tracked again with its old id, an unconfirmed one may get confirmed."""
        if not pairs:
            return
        rows = [t._row for t, _ in pairs]
        dets = [di for _, di in pairs]
        mean, cov = self.kf.update(self._mean[rows], self._cov[rows], xyxy_to_cxcywh(f.boxes[dets]))
        self._mean[rows], self._cov[rows] = mean, cov
        for (t, di), row in zip(pairs, rows):
            t.mean, t.cov = self._mean[row], self._cov[row]
            t.last_frame = self.frame_id  # type: ignore[assignment]
            t.score = float(f.scores[di])
            t.hits += 1
            t.add_label(f.labels[di], t.score)
            if f.groups[di] is not None:
                t.group = f.groups[di]
            t.detection = di
            f.owner[di] = t
            if t.confirmed:
                t.state = TRACKED
            elif t.hits >= self.config.min_hits:
                self._confirm(t, f)

    def _confirm(self, t: Track, f: _Frame) -> None:
        """Give ``t`` an id, or hand it to the lost track it duplicates (id recovery): one that
        overlaps it by half and moves alike, or by ``duplicate_iou`` and is not bound to another
        live group. (A plate of another vehicle may appear where a hidden plate's track waits:
        it moves differently.)"""
        lost = [o for o in self.tracks if o.confirmed and o.state == LOST]
        if lost:
            ious = iou_matrix(_boxes([t]), _boxes(lost))[0]
            for k in np.argsort(-ious):
                o, iou = lost[int(k)], float(ious[k])
                if iou < 0.5:
                    break
                if _same_motion(t, o, loose=True) or (iou >= self.config.duplicate_iou and self._compatible(t, o, f)):
                    self._absorb(o, t, f)
                    return
        t.track_id = self.next_id()
        t.state = TRACKED
        self.started.append(t)

    def _compatible(self, a: Track, b: Track, f: _Frame) -> bool:
        """Not known to belong to two different live groups."""
        return not (self._group_live(a.group, f) and self._group_live(b.group, f) and a.group != b.group)

    def _absorb(self, keeper: Track, donor: Track, f: _Frame) -> None:
        """``keeper`` (the older id) continues with ``donor``'s state and current detection."""
        keeper.mean, keeper.cov = donor.mean, donor.cov
        keeper.last_frame, keeper.score, keeper.state = donor.last_frame, donor.score, TRACKED
        keeper.hits += donor.hits
        keeper.group = donor.group if donor.group is not None else keeper.group
        for label, s in donor.labels.items():
            keeper.add_label(label, s)
        keeper.detection = donor.detection
        if donor.detection is not None:
            f.owner[donor.detection] = keeper
        donor.state = REMOVED
        if donor.confirmed:
            self.ended.append(donor)

    def _remove_duplicates(self, f: _Frame) -> None:
        """A tracked and a lost track on the same spot, moving alike, are one object: the id
        followed for longer survives (taking over the current observation if it was lost)."""
        tracked = [t for t in self.tracks if t.confirmed and t.state == TRACKED]
        lost = [t for t in self.tracks if t.confirmed and t.state == LOST]
        if not tracked or not lost:
            return
        ious = iou_matrix(_boxes(tracked), _boxes(lost))
        for i, j in zip(*np.nonzero(ious > self.config.duplicate_iou)):
            a, b = tracked[i], lost[j]
            if REMOVED in (a.state, b.state) or not _same_motion(a, b):
                continue
            if a.start_frame <= b.start_frame:  # the tracked one is at least as old
                b.state = REMOVED
                self.ended.append(b)
            else:
                self._absorb(b, a, f)


def _same_motion(a: Track, b: Track, loose: bool = False) -> bool:
    """Whether two overlapping tracks also move alike (else they are two objects crossing).
    ``loose`` for a track just confirmed, whose speed is known from a few frames only."""
    dv = float(np.hypot(*(a.mean[4:6] - b.mean[4:6])))
    diag = float(np.hypot(*((a.mean[2:4] + b.mean[2:4]) / 2)))
    return dv <= (max(2.0, 0.1 * diag) if loose else max(1.0, 0.05 * diag))


def _boxes(tracks: list[Track]) -> np.ndarray:
    """``(N, 4)`` Kalman boxes ``[x1, y1, x2, y2]`` of ``tracks``."""
    return cxcywh_to_xyxy(np.array([t.mean[:4] for t in tracks]))
