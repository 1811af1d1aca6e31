"""Image preparation for plate reading: cropping, rectification, contrast, scale, rows.

Everything here is plain OpenCV on BGR ``uint8`` images and returns new arrays (never writes into
the frame it was given: frames are read-only views into shared memory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

__all__ = [
    "CharRow", "char_rows", "clahe", "crop_box", "denoise", "quality", "rectify", "row_crop", "row_line",
    "split_rows", "strip_bands", "stretch_gray", "two_line", "upscale",
]


def crop_box(frame: np.ndarray, box: Sequence[float], margin_x: float = 0.0, margin_y: float | None = None) -> np.ndarray:
    """The box ``[x1, y1, x2, y2]`` grown by ``margin_x`` of its width on each side (and
    ``margin_y`` of its height, default the same), clipped to the frame. A copy."""
    if margin_y is None:
        margin_y = margin_x
    H, W = frame.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    ax, ay = w * margin_x, h * margin_y
    xa, ya = int(max(0, math.floor(x1 - ax))), int(max(0, math.floor(y1 - ay)))
    xb, yb = int(min(W, math.ceil(x2 + ax))), int(min(H, math.ceil(y2 + ay)))
    if xb <= xa or yb <= ya:
        return np.zeros((1, 1, 3), np.uint8)
    return frame[ya:yb, xa:xb].copy()  # never a view: frames are read-only shared memory


#: OpenCV hue range (0-180) and least saturation and value of the blue of European plate bands
BAND_HUE = (95, 135)
BAND_MIN_SAT = 90
BAND_MIN_VAL = 70


def strip_bands(img: np.ndarray) -> np.ndarray:
    """The crop without the blue bands at the ends of a European plate (country code and stars
    on the left; French department and Italian year on the right).

    A text-line recogniser reads the band's letters as part of the plate (``F TX286NS 50``
    becomes ``FTX286NS50``). A band is a block of saturated blue near the crop's end (loose
    detector boxes leave a margin), with light marks in it (:func:`_band_end`, :func:`_band`).
    Navy lettering does not fill that much of its own box, a blue car around the plate has no
    letters in its blue, a plate printed all blue has no end to its blue block, and grey or
    washed-out crops give no blue at all: those crops are returned whole. A view of ``img``
    (no copy).
    """
    if img.ndim != 3 or img.shape[1] < 24:
        return img
    h, w = img.shape[:2]
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    blue = ((hsv[..., 0] >= BAND_HUE[0]) & (hsv[..., 0] <= BAND_HUE[1]) & (hsv[..., 1] >= BAND_MIN_SAT)
            & (hsv[..., 2] >= BAND_MIN_VAL))
    cols = blue.mean(axis=0) >= 0.25  # the band's letter and stars take part of its columns
    x1, x2 = 0, w
    left = _band_end(cols, w)
    if left is not None and _band(blue[:, :left], hsv[:, :left], h):
        x1 = left
    right = _band_end(cols[::-1], w)
    if right is not None and _band(blue[:, w - right:], hsv[:, w - right:], h):
        x2 = w - right
    return img[:, x1:x2] if (x1, x2) != (0, w) else img


def _band_end(cols: np.ndarray, w: int) -> int | None:
    """Where a run of blue columns starting within the first fifth of ``cols`` ends, when it is
    3-22% of the width wide and ends before a third of it."""
    limit = int(w * 0.33)
    blue_at = np.flatnonzero(cols[: int(w * 0.2) + 1])
    if blue_at.size == 0:
        return None
    start = int(blue_at[0])
    end = start
    while end < limit and cols[end]:
        end += 1
    if end >= limit or not 0.03 * w <= end - start <= 0.22 * w:
        return None
    return end


def _band(blue: np.ndarray, hsv: np.ndarray, h: int) -> bool:
    """A band, not lettering nor a blue car around the plate: blue rows span at least 45% of the
    crop's height, blue fills at least 60% of the block, and light marks (the band's country
    code and stars) 3-30% of it. Lettering in blue ink fills less of its box and leaves more of
    the plate's light ground in it; a car's paint has no marks."""
    rows = np.flatnonzero(blue.any(axis=1))
    if rows.size == 0 or rows[-1] - rows[0] + 1 < 0.45 * h:
        return False
    block, colour = blue[rows[0]: rows[-1] + 1], hsv[rows[0]: rows[-1] + 1]
    used = block.any(axis=0)
    block, colour = block[:, used], colour[:, used]
    light = float((~block & (colour[..., 2] >= 120)).mean())
    return float(block.mean()) >= 0.6 and 0.03 <= light <= 0.3


def _gray(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


def quality(crop: np.ndarray) -> dict[str, float]:
    """Sharpness (variance of the Laplacian of the crop scaled to 64 px high, so big and small
    crops compare), size and the tilt of the character row in degrees (0 when unknown)."""
    gray = _gray(crop)
    h, w = gray.shape[:2]
    scaled = cv2.resize(gray, (max(8, round(w * 64 / max(h, 1))), 64), interpolation=cv2.INTER_AREA if h > 64 else cv2.INTER_LINEAR)
    sharp = float(cv2.Laplacian(scaled, cv2.CV_64F).var())
    rows = char_rows(crop)
    angle = rows[0].angle if rows else 0.0
    return {"sharpness": round(sharp, 2), "width": int(w), "height": int(h), "angle": round(float(angle), 2)}


def touches_edge(box: Sequence[float], shape: Sequence[int], margin: float = 2.0) -> bool:
    """True when a box reaches within ``margin`` pixels of the frame's border."""
    h, w = shape[:2]
    x1, y1, x2, y2 = box[:4]
    return x1 <= margin or y1 <= margin or x2 >= w - margin or y2 >= h - margin


def clahe(img: np.ndarray, clip: float = 2.0, tiles: int = 4) -> np.ndarray:
    """Local contrast (CLAHE) on the lightness channel: dark, hazy or back-lit plates."""
    op = cv2.createCLAHE(clipLimit=clip, tileGridSize=(tiles, max(1, tiles // 2)))
    if img.ndim == 2:
        return op.apply(img)
    lab = cv2.cvtColor(img, cv2.COLOR_BGR2LAB)
    lab[..., 0] = op.apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


def stretch_gray(img: np.ndarray, low: float = 2.0, high: float = 98.0) -> np.ndarray:
    """Grey levels stretched so the ``low`` / ``high`` percentiles become black / white: a plate
    is two-tone, and a text-line recogniser reads faded, dark or tinted plates better at full
    contrast. Returns a single-channel image."""
    gray = _gray(img)
    lo, hi = np.percentile(gray, (low, high))
    if hi - lo < 1:
        return gray
    return np.clip((gray.astype(np.float32) - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8)


def upscale(img: np.ndarray, min_height: int = 48) -> np.ndarray:
    """Bicubic enlargement of a crop lower than ``min_height`` px, lightly sharpened."""
    h, w = img.shape[:2]
    if h >= min_height:
        return img
    f = min_height / max(h, 1)
    big = cv2.resize(img, (max(1, round(w * f)), min_height), interpolation=cv2.INTER_CUBIC)
    blur = cv2.GaussianBlur(big, (0, 0), 1.0)
    return cv2.addWeighted(big, 1.5, blur, -0.5, 0)


def denoise(img: np.ndarray) -> np.ndarray:
    """Non-local means: sensor noise and compression blocks of night or distant plates."""
    if img.ndim == 2:
        return cv2.fastNlMeansDenoising(img, None, 7, 7, 21)
    return cv2.fastNlMeansDenoisingColored(img, None, 7, 7, 7, 21)


# -- character rows --------------------------------------------------------------------------------


@dataclass
class CharRow:
    """A row of character-like blobs: their union box, count, median height and tilt."""

    x1: float
    y1: float
    x2: float
    y2: float
    count: int
    height: float
    angle: float  # degrees, positive = the row falls to the right
    boxes: list[tuple[int, int, int, int]]

    @property
    def cy(self) -> float:
        return (self.y1 + self.y2) / 2


def _blobs(gray: np.ndarray) -> list[list[tuple[int, int, int, int]]]:
    """Character-like connected components of both polarities, grouped into rows."""
    H, W = gray.shape
    groups_all: list[list[tuple[int, int, int, int]]] = []
    for invert in (True, False):
        g = 255 - gray if invert else gray
        binary = cv2.adaptiveThreshold(g, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, (H // 2) | 1, -5)
        n, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        cand = []
        for i in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[i])
            if h < 0.12 * H or h > 0.95 * H or h < 8 or w < 2 or w > 0.25 * W or w > 1.3 * h:
                continue
            if area < 0.15 * w * h:
                continue
            cand.append((x, y, w, h))
        groups_all.extend(g for g in _chain(cand) if len(g) >= 2)
    return groups_all


def _chain(cand: list[tuple[int, int, int, int]]) -> list[list[tuple[int, int, int, int]]]:
    """Blobs linked into rows: neighbours of similar height, side by side, at about the same
    height (so a tilted row stays one row)."""
    parent = list(range(len(cand)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    order = sorted(range(len(cand)), key=lambda i: cand[i][0])
    for a_i, i in enumerate(order):
        xi, yi, wi, hi = cand[i]
        for j in order[a_i + 1:]:
            xj, yj, wj, hj = cand[j]
            gap = xj - (xi + wi)
            if gap > 3.0 * max(hi, hj):  # the emblem between "ABC" and "123" is a wide gap
                break
            if abs(hi - hj) > 0.3 * max(hi, hj) or abs((yi + hi / 2) - (yj + hj / 2)) > 0.4 * max(hi, hj):
                continue
            if gap < -0.5 * min(wi, wj):  # overlapping: a blob inside another, not a neighbour
                continue
            parent[root(j)] = root(i)
    rows: dict[int, list[tuple[int, int, int, int]]] = {}
    for i in range(len(cand)):
        rows.setdefault(root(i), []).append(cand[i])
    return list(rows.values())


def char_rows(img: np.ndarray, min_chars: int = 3) -> list[CharRow]:
    """Rows of character-like blobs, best first (more characters, taller). Works on a crop that
    is at least 64 px high (smaller crops are enlarged for the search)."""
    gray = _gray(img)
    H = gray.shape[0]
    f = 64.0 / H if H < 64 else 1.0
    if f != 1.0:
        gray = cv2.resize(gray, None, fx=f, fy=f, interpolation=cv2.INTER_CUBIC)
    rows = []
    for grp in _blobs(gray):
        if len(grp) < min_chars:
            continue
        xs = np.array([b[0] + b[2] / 2 for b in grp], np.float64)
        ys = np.array([b[1] + b[3] / 2 for b in grp], np.float64)
        heights = np.array([b[3] for b in grp], np.float64)
        angle = 0.0
        if len(grp) >= 3 and np.ptp(xs) > 0:
            slope = np.polyfit(xs, ys, 1)[0]
            angle = math.degrees(math.atan(slope))
        hm = float(np.median(heights))
        rows.append(CharRow(min(b[0] for b in grp) / f, min(b[1] for b in grp) / f,
                            max(b[0] + b[2] for b in grp) / f, max(b[1] + b[3] for b in grp) / f,
                            len(grp), hm / f, angle, [tuple(int(v / f) for v in b) for b in grp]))  # type: ignore[misc]
    rows.sort(key=lambda r: (r.count * r.height), reverse=True)
    # drop rows that are the same blobs found in the other polarity
    unique: list[CharRow] = []
    for r in rows:
        if any(abs(r.cy - u.cy) < 0.5 * u.height and abs(r.height - u.height) < 0.3 * u.height for u in unique):
            continue
        unique.append(r)
    return unique


def row_crop(img: np.ndarray, margin: float = 0.2) -> np.ndarray | None:
    """The band of the plate's main character row (full width, ``margin`` of the row's height
    above and below): drops the state name, slogans and frame text above and below the number,
    which a text-line recogniser would otherwise squeeze into its 48 px line. Also levels a tilted
    row. None when no row of characters is found."""
    found = row_line(img, margin)
    return None if found is None else found[0]


def row_line(img: np.ndarray, margin: float = 0.2) -> tuple[np.ndarray, CharRow] | None:
    """:func:`row_crop` and the row it found, its boxes moved into the band's coordinates (the
    character blobs tell a reader how many characters the line holds)."""
    rows = char_rows(img)
    if not rows:
        return None
    r = rows[0]
    H, W = img.shape[:2]
    if abs(r.angle) > 2.0:
        rot = cv2.getRotationMatrix2D(((r.x1 + r.x2) / 2, r.cy), r.angle, 1.0)
        img = cv2.warpAffine(img, rot, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    band_h = r.y2 - r.y1
    pad = margin * band_h
    y1 = int(max(0, math.floor(r.y1 - pad)))
    y2 = int(min(H, math.ceil(r.y2 + pad)))
    if y2 - y1 < 8:
        return None
    if (y2 - y1) > 0.95 * H:
        return img, r
    moved = CharRow(r.x1, r.y1 - y1, r.x2, r.y2 - y1, r.count, r.height, r.angle,
                    [(x, y - y1, w, h) for x, y, w, h in r.boxes])
    return np.ascontiguousarray(img[y1:y2]), moved


def split_rows(img: np.ndarray) -> list[np.ndarray] | None:
    """The two character rows of a two-line plate, top first, or None when the crop does not
    hold two stacked rows of similar-width characters."""
    rows = char_rows(img, min_chars=2)
    if len(rows) < 2:
        return None
    a, b = sorted(rows[:2], key=lambda r: r.cy)
    if b.y1 < a.y2 - 0.2 * a.height or b.count < 2 or a.count < 1:
        return None
    H, W = img.shape[:2]
    if (b.y2 - a.y1) < 0.4 * H:
        return None
    out = []
    for r in (a, b):
        pad = 0.15 * (r.y2 - r.y1)
        y1, y2 = int(max(0, r.y1 - pad)), int(min(H, r.y2 + pad))
        x1, x2 = int(max(0, r.x1 - 0.6 * r.height)), int(min(W, r.x2 + 0.6 * r.height))
        out.append(np.ascontiguousarray(img[y1:y2, x1:x2]))
    return out


def two_line(img: np.ndarray) -> np.ndarray | None:
    """A two-line plate laid out as one line (top row, then bottom row, same height)."""
    rows = split_rows(img)
    if rows is None:
        return None
    h = max(r.shape[0] for r in rows)
    scaled = [cv2.resize(r, (max(1, round(r.shape[1] * h / r.shape[0])), h)) for r in rows]
    gap = np.repeat(np.repeat(np.median(scaled[0].reshape(-1, scaled[0].shape[-1]), 0).astype(np.uint8)[None, None],
                              h, 0), max(2, h // 4), 1)
    return np.ascontiguousarray(np.hstack([scaled[0], gap, scaled[1]]))


# -- rectification ---------------------------------------------------------------------------------


def _order(pts: np.ndarray) -> np.ndarray:
    """Corners as top-left, top-right, bottom-right, bottom-left."""
    pts = pts.reshape(4, 2).astype(np.float32)
    s = pts.sum(1)
    d = np.diff(pts, axis=1).ravel()
    return np.array([pts[np.argmin(s)], pts[np.argmin(d)], pts[np.argmax(s)], pts[np.argmax(d)]], np.float32)


def plate_quad(img: np.ndarray) -> np.ndarray | None:
    """The plate's outline as four corners (crop coordinates), from the largest convex,
    plate-shaped contour of an edge map; None when nothing plate-like is found."""
    gray = _gray(img)
    H, W = gray.shape
    area = H * W
    blur = cv2.GaussianBlur(gray, (3, 3), 0)
    best, best_area = None, 0.0
    for lo, hi in ((50, 150), (20, 80)):
        edges = cv2.Canny(blur, lo, hi)
        edges = cv2.dilate(edges, np.ones((2, 2), np.uint8))
        contours, _ = cv2.findContours(edges, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        for c in contours:
            a = cv2.contourArea(c)
            if a < 0.3 * area or a > 0.98 * area or a <= best_area:
                continue
            hull = cv2.convexHull(c)
            approx = cv2.approxPolyDP(hull, 0.03 * cv2.arcLength(hull, True), True)
            if len(approx) == 4:
                quad = approx
            else:
                quad = cv2.boxPoints(cv2.minAreaRect(hull)).reshape(-1, 1, 2)
            if cv2.contourArea(quad.astype(np.float32)) > 1.3 * a:
                continue  # far from a quadrilateral
            best, best_area = quad, a
        if best is not None:
            break
    return None if best is None else _order(best)


def rectify(img: np.ndarray, min_skew_deg: float = 2.0) -> np.ndarray | None:
    """The plate warped flat: perspective from its outline (:func:`plate_quad`), else rotation by
    the tilt of its character row. None when there is nothing to straighten."""
    quad = plate_quad(img)
    if quad is not None:
        tl, tr, br, bl = quad
        w = max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl))
        h = max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr))
        skew = math.degrees(math.atan2(tr[1] - tl[1], tr[0] - tl[0]))
        vskew = math.degrees(math.atan2(bl[0] - tl[0], bl[1] - tl[1]))
        if w > 8 and h > 4 and (abs(skew) >= min_skew_deg or abs(vskew) >= min_skew_deg):
            dst = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
            m = cv2.getPerspectiveTransform(quad, dst)
            return cv2.warpPerspective(img, m, (int(round(w)), int(round(h))), flags=cv2.INTER_CUBIC,
                                       borderMode=cv2.BORDER_REPLICATE)
    rows = char_rows(img)
    if rows and abs(rows[0].angle) >= min_skew_deg:
        H, W = img.shape[:2]
        r = rows[0]
        rot = cv2.getRotationMatrix2D(((r.x1 + r.x2) / 2, r.cy), r.angle, 1.0)
        return cv2.warpAffine(img, rot, (W, H), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    return None
