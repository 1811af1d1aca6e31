"""Doubled characters that a CTC recogniser collapsed, found from the character blobs of the line.

CTC emits a character once per run of frames and needs a blank frame between two equal
characters; on narrow, tightly spaced plate characters ("JJZ4273", "MF13555") the recogniser
often sees one wide "J" and reads "JZ4273", sure of itself, and a shorter text that still fits
a plate format. The image says otherwise: the main character row has one blob more than the
read has characters, and two of those blobs, side by side and alike, fall on one read
character. :func:`collapsed_double` finds that character so the reader can emit it twice.

It only ever adds a character that the read already has next to itself, and only when the
blobs are unambiguous: one blob too many, every other character on exactly one blob, and the
two blobs of the same size and look (a broken "H" or a "Y" the read dropped is not a double).
"""

from __future__ import annotations

import cv2
import numpy as np

from .ocr_prep import CharRow
from .regions import ctc_runs

__all__ = ["collapsed_double"]

#: Blobs lower than this fraction of the row's median height are not characters (hyphens, bolts) ...
FULL_HEIGHT = 0.75
#: ... nor are blobs narrower than this fraction of their height (the plate's border, a frame edge).
MIN_ASPECT = 0.12
#: Two blobs of one double differ in width by at most this factor ...
MAX_WIDTH_RATIO = 1.5
#: ... and their grey patches correlate at least this well.
MIN_LIKENESS = 0.75


def collapsed_double(labels: np.ndarray, row: CharRow, line: np.ndarray, frame_px: float) -> int | None:
    """Index (into :func:`~alpr_topo.stages.regions.ctc_runs`) of the character that stands for two blobs of the row, or None.

    ``labels``: the greedy label per frame; ``row``: the character row found in ``line`` (the
    image the recogniser read, boxes in its coordinates); ``frame_px``: pixels of ``line`` per
    CTC frame.
    """
    chars = ctc_runs(labels)
    blobs = sorted((b for b in row.boxes if b[3] >= FULL_HEIGHT * row.height and b[2] >= MIN_ASPECT * b[3]),
                   key=lambda b: b[0])
    if not chars or len(blobs) != len(chars) + 1:
        return None
    centres = [(t0 + t1 + 1) / 2 * frame_px for _, t0, t1 in chars]
    owner = [int(np.argmin([abs(b[0] + b[2] / 2 - c) for c in centres])) for b in blobs]
    counts = np.bincount(owner, minlength=len(chars))
    if sorted(counts.tolist()) != [1] * (len(chars) - 1) + [2]:
        return None
    j = int(np.argmax(counts))
    a, b = (blobs[i] for i in range(len(blobs)) if owner[i] == j)
    if max(a[2], b[2]) > MAX_WIDTH_RATIO * min(a[2], b[2]):
        return None
    return j if _likeness(line, a, b) >= MIN_LIKENESS else None


def _likeness(line: np.ndarray, a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Normalised correlation of two blobs' grey patches, scaled to one size."""
    gray = cv2.cvtColor(line, cv2.COLOR_BGR2GRAY) if line.ndim == 3 else line
    w = max(4, (a[2] + b[2]) // 2)
    h = max(4, (a[3] + b[3]) // 2)
    patches = []
    for x, y, bw, bh in (a, b):
        patch = gray[max(0, y):y + bh, max(0, x):x + bw]
        if patch.size == 0:
            return 0.0
        patch = cv2.resize(patch, (w, h), interpolation=cv2.INTER_AREA).astype(np.float64)
        patch -= patch.mean()
        patches.append(patch)
    norm = float(np.linalg.norm(patches[0]) * np.linalg.norm(patches[1]))
    return float((patches[0] * patches[1]).sum() / norm) if norm > 0 else 0.0
