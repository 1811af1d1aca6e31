"""Synthetic road scenes with ground truth: the renderer behind ``source.synthetic``.

Usable without any stage or runtime::

    from alpr_topo.stages.synthetic import SceneRenderer

    for image, truth in SceneRenderer({"width": 640, "height": 360, "count": 30, "seed": 7}).frames():
        ...   # image: BGR uint8 (360, 640, 3); truth: list of dicts (see docs/synthetic.md)

How it stays fast: the background is painted once; each vehicle is drawn once when it enters,
with its plate, its motion blur and the low-light grade baked into a premultiplied BGR sprite
with an alpha channel; per frame the renderer copies the background, blends each sprite into its
rectangle with two OpenCV calls (``roi * (255 - alpha) / 255 + sprite``) and adds sensor noise
cut from a pre-computed noise field at a random offset. Vehicles driving towards or away from
the camera are scaled per frame from a small mip pyramid of their sprite.

Everything random comes from ``numpy.random.default_rng([seed, ...])`` streams keyed by what
they decide (the background, vehicle number n, frame number n), so the same parameters give
byte-identical frames and truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal

import cv2
import numpy as np
from pydantic import Field, field_validator, model_validator

from ..core.stage import StageParams
from .synth_plates import PLATE_FORMATS, PlateFormat, render_plate, resolve_font, resolve_fonts, resolve_formats

__all__ = ["SyntheticParams", "SceneRenderer", "DIRECTIONS", "SIM_FPS_WHEN_UNPACED", "OCCLUDED_ABOVE"]

Direction = Literal["ltr", "rtl", "towards", "away"]
DIRECTIONS: tuple[str, ...] = ("ltr", "rtl", "towards", "away")
#: Scene time step when ``fps`` is 0 (frames as fast as downstream takes them).
SIM_FPS_WHEN_UNPACED = 15.0
#: A plate counts as not visible when more than this fraction of its box is hidden.
OCCLUDED_ABOVE = 0.30
SS = 2  # vehicles and walkers are drawn at this supersampling, then reduced (anti-aliasing)
NOISE_PAD = 48


class SyntheticParams(StageParams):
    """Parameters of ``source.synthetic`` and of :class:`SceneRenderer` (the same model)."""

    width: int = Field(1280, ge=64, le=8192, description="frame width in pixels")
    height: int = Field(720, ge=64, le=8192, description="frame height in pixels")
    fps: float = Field(15.0, ge=0, le=1000, description="frames per second of the scene and pace of the source; "
                       "0 = as fast as downstream takes them (the scene then advances 1/15 s per frame)")
    duration_s: float = Field(60.0, ge=0, description="scene length in seconds: duration_s x fps frames "
                              "(0 together with count 0 = endless)")
    count: int = Field(0, ge=0, description="frames to emit; overrides duration_s when > 0")
    seed: int = Field(0, ge=0, description="random seed: the same seed and parameters give byte-identical frames and truth")
    camera_id: str = Field("synthetic", min_length=1, description="camera id put on every envelope")
    vehicles: int = Field(20, ge=0, le=100000, description="vehicles entering over the scene (per 60 s when endless)")
    max_simultaneous: int = Field(3, ge=1, le=12, description="most vehicles in the frame at once")
    crossing_s: tuple[float, float] = Field((2.5, 5.5), description="speed range as [min, max] seconds a vehicle takes "
                                            "to cross the frame (ltr/rtl) or to drive from far to near (towards/away)")
    directions: list[Direction] = Field(["ltr", "rtl", "towards"], min_length=1, description="directions of travel: "
                                        "ltr, rtl (across the frame), towards (growing, front view), away (shrinking, rear view)")
    formats: list[str] = Field(["us", "eu"], min_length=1, description="plate formats: ids (us-ca, us-ny, us-tx, us-il, "
                               "us-nj, eu-de, eu-fr, eu-uk, eu-nl, eu-it, eu-es) or families (us, eu, all)")
    fonts: list[str] = Field([], description="fonts for the plate characters: paths, file names under the system font "
                             "folders, or 'default' (Pillow's built-in scalable font); empty = DejaVu Sans Bold, "
                             "DejaVu Sans Mono Bold, DejaVu Sans Condensed Bold (those present) and 'default'")
    plate_width: tuple[int, int] = Field((90, 220), description="[min, max] plate width in frame pixels (towards/away: "
                                         "the plate grows or shrinks within this range while fully in view)")
    noise: float = Field(3.0, ge=0, le=64, description="sensor noise: standard deviation in grey levels")
    shutter_s: float = Field(0.004, ge=0, le=1, description="exposure time in seconds: blur length along the motion = "
                             "pixels moved per second x this (0 = sharp). A camera's exposure is set by the light, "
                             "not by its frame rate: 1/250 s is a general-purpose camera in daylight, plate "
                             "cameras use 1/1000 s or shorter, night exposures reach 1/30 s")
    low_light: float = Field(0.0, ge=0, le=1, description="0 = daylight ... 1 = night: darker, lower contrast, more noise")
    occlusion: float = Field(0.2, ge=0, le=1, description="fraction of vehicles whose plate a pedestrian walks in front of "
                             "for a while (plate_visible is false while more than 30% of the plate is hidden)")
    plate_rotation_deg: float = Field(3.0, ge=0, le=30, description="plates are rotated by up to this many degrees")
    plate_perspective: float = Field(0.06, ge=0, le=0.3, description="plates are skewed by up to this fraction "
                                     "(keystone from a camera that is off-axis)")
    plate_fill: str | None = Field(None, description="paint every plate one flat colour '#rrggbb' without text "
                                   "(for tests that find plates by colour)")

    @field_validator("crossing_s")
    @classmethod
    def _crossing(cls, value: tuple[float, float]) -> tuple[float, float]:
        lo, hi = value
        if not 0.2 <= lo <= hi:
            raise ValueError("expected [min, max] seconds with 0.2 <= min <= max")
        return value

    @field_validator("plate_width")
    @classmethod
    def _plate_width(cls, value: tuple[int, int]) -> tuple[int, int]:
        lo, hi = value
        if not 16 <= lo <= hi:
            raise ValueError("expected [min, max] pixels with 16 <= min <= max")
        return value

    @field_validator("formats")
    @classmethod
    def _formats(cls, value: list[str]) -> list[str]:
        resolve_formats(value)  # raises ValueError naming the known ones
        return value

    @field_validator("fonts")
    @classmethod
    def _fonts(cls, value: list[str]) -> list[str]:
        for spec in value:
            resolve_font(spec)
        return value

    @field_validator("plate_fill")
    @classmethod
    def _fill(cls, value: str | None) -> str | None:
        if value is not None:
            _hex_rgb(value)
        return value

    @model_validator(mode="after")
    def _fits(self) -> "SyntheticParams":
        if self.plate_width[1] > 0.45 * self.width:
            raise ValueError(f"plate_width max {self.plate_width[1]} is too wide for a {self.width} px frame "
                             f"(at most {int(0.45 * self.width)})")
        return self


def _hex_rgb(value: str) -> tuple[int, int, int]:
    text = value.strip().lstrip("#")
    if len(text) != 6:
        raise ValueError(f"expected a colour '#rrggbb', got {value!r}")
    try:
        return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)
    except ValueError:
        raise ValueError(f"expected a colour '#rrggbb', got {value!r}") from None


# --- sprites -------------------------------------------------------------------------------------

@dataclass
class Sprite:
    """A premultiplied BGR image with alpha, ready to blend: ``out = out * inv / 255 + bgr``."""

    bgr: np.ndarray     # uint8 (h, w, 3), colour x alpha
    alpha: np.ndarray   # uint8 (h, w)
    inv: np.ndarray = field(init=False)  # uint8 (h, w, 3): 255 - alpha

    def __post_init__(self) -> None:
        self.inv = cv2.cvtColor(255 - self.alpha, cv2.COLOR_GRAY2BGR)

    @property
    def shape(self) -> tuple[int, int]:
        return self.alpha.shape[0], self.alpha.shape[1]

    @classmethod
    def from_bgra(cls, bgra: np.ndarray) -> "Sprite":
        return cls(cv2.cvtColor(bgra, cv2.COLOR_BGRA2BGR), cv2.extractChannel(bgra, 3))


def _grade(sprite_bgr: np.ndarray, alpha: np.ndarray, lut: np.ndarray | None) -> np.ndarray:
    """Apply the low-light tone curve to a premultiplied sprite (on its straight colours)."""
    if lut is None:
        return sprite_bgr
    a = np.maximum(alpha, 1).astype(np.float32)[..., None]
    straight = np.clip(sprite_bgr.astype(np.float32) * 255.0 / a + 0.5, 0, 255).astype(np.uint8)
    graded = cv2.LUT(straight, lut)
    return (graded.astype(np.float32) * alpha[..., None].astype(np.float32) / 255.0 + 0.5).astype(np.uint8)


def _motion_blur(bgra: np.ndarray, length: int, vertical: bool) -> tuple[np.ndarray, int]:
    """Blur a premultiplied BGRA array along one axis; returns it padded and the padding."""
    if length < 2:
        return bgra, 0
    pad = length
    if vertical:
        padded = cv2.copyMakeBorder(bgra, pad, pad, 0, 0, cv2.BORDER_CONSTANT, value=0)
        kernel = np.full((length, 1), 1.0 / length, np.float32)
    else:
        padded = cv2.copyMakeBorder(bgra, 0, 0, pad, pad, cv2.BORDER_CONSTANT, value=0)
        kernel = np.full((1, length), 1.0 / length, np.float32)
    return cv2.filter2D(padded, -1, kernel, borderType=cv2.BORDER_CONSTANT), pad


class _Canvas:
    """A supersampled drawing surface: premultiplied colour (black = transparent) and alpha."""

    def __init__(self, width: float, height: float) -> None:
        self.w, self.h = int(math.ceil(width)), int(math.ceil(height))
        self.bgr = np.zeros((self.h * SS, self.w * SS, 3), np.uint8)
        self.alpha = np.zeros((self.h * SS, self.w * SS), np.uint8)

    @staticmethod
    def _pts(points: list[tuple[float, float]]) -> np.ndarray:
        return np.array([[int(round(x * SS)), int(round(y * SS))] for x, y in points], np.int32)

    def poly(self, points: list[tuple[float, float]], color: tuple[int, int, int], alpha: int = 255) -> None:
        pts = [self._pts(points)]
        cv2.fillPoly(self.bgr, pts, tuple(int(c * alpha / 255) for c in color))
        cv2.fillPoly(self.alpha, pts, alpha)

    def rect(self, x1: float, y1: float, x2: float, y2: float, color: tuple[int, int, int], radius: float = 0.0) -> None:
        if radius <= 0:
            self.poly([(x1, y1), (x2, y1), (x2, y2), (x1, y2)], color)
            return
        r = min(radius, (x2 - x1) / 2, (y2 - y1) / 2)
        self.poly([(x1 + r, y1), (x2 - r, y1), (x2 - r, y2), (x1 + r, y2)], color)
        self.poly([(x1, y1 + r), (x2, y1 + r), (x2, y2 - r), (x1, y2 - r)], color)
        for cx, cy in ((x1 + r, y1 + r), (x2 - r, y1 + r), (x1 + r, y2 - r), (x2 - r, y2 - r)):
            self.ellipse(cx, cy, r, r, color)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, color: tuple[int, int, int], alpha: int = 255) -> None:
        center = (int(round(cx * SS)), int(round(cy * SS)))
        axes = (max(1, int(round(rx * SS))), max(1, int(round(ry * SS))))
        cv2.ellipse(self.bgr, center, axes, 0, 0, 360, tuple(int(c * alpha / 255) for c in color), -1)
        cv2.ellipse(self.alpha, center, axes, 0, 0, 360, alpha, -1)

    def reduce(self) -> tuple[np.ndarray, np.ndarray]:
        size = (self.w, self.h)
        return (cv2.resize(self.bgr, size, interpolation=cv2.INTER_AREA),
                cv2.resize(self.alpha, size, interpolation=cv2.INTER_AREA))


def _shade(color: tuple[int, int, int], k: float) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, c * k))) for c in color)  # type: ignore[return-value]


#: name -> BGR; weighted towards the greys that dominate real traffic. No magenta anywhere.
VEHICLE_COLORS: list[tuple[str, tuple[int, int, int], float]] = [
    ("white", (236, 236, 232), 0.22), ("silver", (188, 186, 182), 0.16), ("gray", (112, 110, 108), 0.14),
    ("black", (34, 33, 32), 0.16), ("red", (38, 36, 176), 0.08), ("blue", (150, 78, 32), 0.08),
    ("darkblue", (84, 42, 22), 0.05), ("green", (56, 104, 48), 0.04), ("beige", (150, 184, 200), 0.04),
    ("yellow", (36, 196, 230), 0.03),
]
#: body style -> (height / width, cabin top width, cabin bottom row, wheel row) as fractions
BODY_STYLES: dict[str, tuple[float, float, float, float]] = {
    "sedan": (0.70, 0.64, 0.44, 0.84),
    "hatchback": (0.76, 0.70, 0.47, 0.85),
    "suv": (0.86, 0.76, 0.46, 0.82),
    "van": (0.98, 0.88, 0.50, 0.86),
}
STYLE_WEIGHTS = (0.38, 0.27, 0.25, 0.10)


@dataclass
class VehicleLook:
    style: str
    color_name: str
    color: tuple[int, int, int]
    front: bool  # the camera sees the front (headlights, plate on the bumper) or the rear


def draw_vehicle(look: VehicleLook, width: float, plate: tuple[np.ndarray, np.ndarray], plate_quad: np.ndarray | None,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int, int, int], tuple[int, int, int, int]]:
    """Draw a vehicle seen from behind or in front, ``width`` pixels wide, with its plate.

    ``plate_quad`` gives the plate's corners relative to its nominal centre (rotation and
    keystone), in sprite pixels. Returns premultiplied BGR, alpha, the plate's alpha (for its
    box), the vehicle box and the plate box (x1, y1, x2, y2, exclusive ends) in sprite pixels.
    """
    ratio, cabin_top, cabin_bottom, wheel_row = BODY_STYLES[look.style]
    W = float(width)
    H = W * ratio
    shadow = H * 0.05
    cv = _Canvas(W, H + shadow)
    body = look.color
    dark = _shade(body, 0.72)
    light = _shade(body, 1.12)
    tire = (28, 28, 30)
    # shadow on the road: below the wheels, half transparent, left out of the vehicle's box
    cv.ellipse(W / 2, H - shadow * 0.2, W * 0.52, shadow * 1.1, (12, 12, 14), alpha=110)
    # wheels
    for x1, x2 in ((0.07, 0.23), (0.77, 0.93)):
        cv.rect(W * x1, H * wheel_row, W * x2, H, tire, radius=W * 0.025)
    # cabin and glass
    top_in = (1 - cabin_top) / 2
    cv.poly([(W * 0.05, H * (cabin_bottom + 0.02)), (W * top_in, H * 0.04), (W * (1 - top_in), H * 0.04),
             (W * 0.95, H * (cabin_bottom + 0.02))], dark)
    cv.rect(W * (top_in + 0.03), H * 0.0, W * (1 - top_in - 0.03), H * 0.07, dark, radius=H * 0.03)
    glass = (70, 58, 50) if not look.front else (84, 72, 62)
    g_top, g_bot = H * 0.09, H * (cabin_bottom - 0.02)
    cv.poly([(W * 0.11, g_bot), (W * (top_in + 0.04), g_top), (W * (1 - top_in - 0.04), g_top), (W * 0.89, g_bot)], glass)
    refl = _shade(glass, 1.35)
    cv.poly([(W * 0.30, g_bot), (W * 0.42, g_top), (W * 0.50, g_top), (W * 0.38, g_bot)], refl)
    # lower body
    body_top, body_bot = H * (cabin_bottom - 0.01), H * (wheel_row + 0.05)
    cv.rect(0, body_top, W, body_bot, body, radius=W * 0.05)
    cv.rect(W * 0.02, body_top, W * 0.98, body_top + H * 0.035, light, radius=H * 0.015)  # shoulder line
    # mirrors
    for x1, x2 in ((0.0, 0.07), (0.93, 1.0)):
        cv.rect(W * x1, H * (cabin_bottom - 0.09), W * x2, H * (cabin_bottom - 0.02), dark, radius=H * 0.02)
    # lights and bumper
    lamp_top, lamp_bot = body_top + H * 0.05, body_top + H * 0.15
    if look.front:
        lamp, lamp_in = (200, 214, 222), (246, 250, 252)
        cv.rect(W * 0.30, lamp_top + H * 0.02, W * 0.70, lamp_bot + H * 0.03, (30, 30, 32), radius=H * 0.02)  # grille
        for k in range(3):
            y = lamp_top + H * (0.04 + 0.035 * k)
            cv.rect(W * 0.32, y, W * 0.68, y + H * 0.012, (70, 70, 72))
    else:
        lamp, lamp_in = (36, 30, 150), (70, 66, 220)
    for x1, x2 in ((0.03, 0.24), (0.76, 0.97)):
        cv.rect(W * x1, lamp_top, W * x2, lamp_bot, lamp, radius=H * 0.02)
        cv.rect(W * (x1 + 0.03), lamp_top + H * 0.02, W * (x2 - 0.03), lamp_bot - H * 0.02, lamp_in, radius=H * 0.01)
    bumper = (46, 46, 48) if rng.random() < 0.6 else _shade(body, 0.85)
    bump_top = body_bot - H * 0.12
    cv.rect(W * 0.01, bump_top, W * 0.99, body_bot, bumper, radius=H * 0.03)
    # the plate: on the bumper in front, on the boot lid above the bumper at the rear
    p_bgr, p_alpha = plate
    ph, pw = p_alpha.shape
    pw_px, ph_px = pw / SS, ph / SS
    if look.front:
        cy = min(bump_top + H * 0.055, body_bot - ph_px * 0.55)
    else:
        cy = bump_top - ph_px * 0.5 + H * 0.02
    cy = max(cy, lamp_bot + ph_px * 0.5 + H * 0.01) if not look.front else cy
    cx = W / 2
    cv.rect(cx - pw_px * 0.56, cy - ph_px * 0.62, cx + pw_px * 0.56, cy + ph_px * 0.62, _shade(bumper, 0.7),
            radius=H * 0.01)  # plate recess
    body_alpha = cv.alpha.copy()
    plate_alpha = _place_plate(cv, p_bgr, p_alpha, cx, cy, plate_quad)
    bgr, alpha = cv.reduce()
    small_body = cv2.resize(np.where(body_alpha >= 128, 255, 0).astype(np.uint8), (cv.w, cv.h), interpolation=cv2.INTER_AREA)
    small_plate = cv2.resize(plate_alpha, (cv.w, cv.h), interpolation=cv2.INTER_AREA)
    return bgr, alpha, small_plate, _bbox(small_body), _bbox(small_plate)


def _bbox(mask: np.ndarray, threshold: int = 128) -> tuple[int, int, int, int]:
    rows = np.flatnonzero((mask >= threshold).any(axis=1))
    cols = np.flatnonzero((mask >= threshold).any(axis=0))
    if len(rows) == 0:
        return (0, 0, 0, 0)
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _place_plate(cv: _Canvas, p_bgr: np.ndarray, p_alpha: np.ndarray, cx: float, cy: float,
                 quad: np.ndarray | None) -> np.ndarray:
    """Warp the (supersampled) plate onto the canvas centred at (cx, cy); returns its alpha."""
    ph, pw = p_alpha.shape
    if quad is None:
        quad = np.array([[-pw / 2, -ph / 2], [pw / 2, -ph / 2], [pw / 2, ph / 2], [-pw / 2, ph / 2]], np.float32) / SS
    dst = quad.astype(np.float32) * SS + np.array([cx * SS, cy * SS], np.float32)
    x0, y0 = int(math.floor(dst[:, 0].min())) - 1, int(math.floor(dst[:, 1].min())) - 1
    x1, y1 = int(math.ceil(dst[:, 0].max())) + 2, int(math.ceil(dst[:, 1].max())) + 2
    src = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], np.float32)
    matrix = cv2.getPerspectiveTransform(src, dst - np.array([x0, y0], np.float32))
    size = (x1 - x0, y1 - y0)
    premult = (p_bgr.astype(np.uint16) * p_alpha[..., None] // 255).astype(np.uint8)
    warped = cv2.warpPerspective(premult, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    warped_a = cv2.warpPerspective(p_alpha, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    full = np.zeros_like(cv.alpha)
    # clip to the canvas (a plate never leaves its vehicle, but stay safe)
    cx0, cy0 = max(0, x0), max(0, y0)
    cx1, cy1 = min(cv.alpha.shape[1], x1), min(cv.alpha.shape[0], y1)
    wa = warped_a[cy0 - y0: cy1 - y0, cx0 - x0: cx1 - x0]
    wb = warped[cy0 - y0: cy1 - y0, cx0 - x0: cx1 - x0]
    region = cv.bgr[cy0:cy1, cx0:cx1]
    inv = cv2.cvtColor(255 - wa, cv2.COLOR_GRAY2BGR)
    cv2.multiply(region, inv, dst=region, scale=1 / 255.0)
    cv2.add(region, wb, dst=region)
    ra = cv.alpha[cy0:cy1, cx0:cx1]
    np.maximum(ra, wa, out=ra)
    full[cy0:cy1, cx0:cx1] = wa
    return full


def draw_walker(height: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A pedestrian (front view), ``height`` pixels tall: premultiplied BGR and alpha."""
    H = float(height)
    W = H * 0.42
    cv = _Canvas(W, H)
    coats = [(40, 40, 44), (70, 50, 30), (30, 60, 120), (110, 110, 112), (40, 80, 40), (150, 120, 60), (30, 30, 140),
             (200, 200, 205)]
    coat = coats[int(rng.integers(len(coats)))]
    trousers = [(40, 36, 32), (90, 60, 30), (60, 60, 62), (20, 20, 22)][int(rng.integers(4))]
    skin = [(150, 180, 225), (110, 150, 200), (70, 100, 150), (50, 70, 100)][int(rng.integers(4))]
    hair = [(20, 20, 25), (40, 60, 90), (120, 160, 200), (80, 80, 80)][int(rng.integers(4))]
    cv.rect(W * 0.29, H * 0.55, W * 0.48, H * 0.99, trousers, radius=W * 0.04)
    cv.rect(W * 0.52, H * 0.55, W * 0.71, H * 0.99, trousers, radius=W * 0.04)
    cv.rect(W * 0.07, H * 0.19, W * 0.22, H * 0.52, coat, radius=W * 0.07)
    cv.rect(W * 0.78, H * 0.19, W * 0.93, H * 0.52, coat, radius=W * 0.07)
    cv.rect(W * 0.16, H * 0.16, W * 0.84, H * 0.62, coat, radius=W * 0.12)
    cv.ellipse(W * 0.5, H * 0.095, W * 0.15, H * 0.075, skin)
    cv.ellipse(W * 0.5, H * 0.06, W * 0.155, H * 0.045, hair)
    if rng.random() < 0.4:  # a bag
        cv.rect(W * 0.70, H * 0.42, W * 0.98, H * 0.62, _shade(coat, 0.6), radius=W * 0.03)
    return cv.reduce()


# --- background ----------------------------------------------------------------------------------

def draw_background(width: int, height: int, directions: list[str], rng: np.random.Generator) -> np.ndarray:
    """Asphalt with texture, lane markings, a kerb and pavement at the top."""
    W, H = width, height
    base = np.array([92, 94, 97], np.float32) * float(rng.uniform(0.85, 1.1))
    low = rng.normal(0, 1, (max(2, H // 48), max(2, W // 48))).astype(np.float32)
    low = cv2.resize(low, (W, H), interpolation=cv2.INTER_CUBIC) * 7.0
    grain = rng.normal(0, 6.0, (H, W)).astype(np.float32)
    grain = cv2.GaussianBlur(grain, (3, 3), 0.7)
    image = base[None, None, :] + (low + grain)[..., None]
    image = np.clip(image, 0, 255).astype(np.uint8)
    # tar patches and cracks
    patches = image.copy()
    for _ in range(int(rng.integers(3, 7))):
        x, y = int(rng.integers(0, W)), int(rng.integers(0, H))
        axes = (int(rng.integers(W // 30, W // 8)), int(rng.integers(H // 50, H // 16)))
        cv2.ellipse(patches, (x, y), axes, float(rng.uniform(-15, 15)), 0, 360, (72, 73, 75), -1, cv2.LINE_AA)
    image = cv2.addWeighted(cv2.GaussianBlur(patches, (0, 0), max(1.0, W / 400)), 0.45, image, 0.55, 0)
    for _ in range(int(W * H / 200000) + 2):
        pts = [(int(rng.integers(0, W)), int(rng.integers(0, H)))]
        for _ in range(int(rng.integers(3, 8))):
            px, py = pts[-1]
            pts.append((px + int(rng.integers(-W // 30, W // 30)), py + int(rng.integers(-H // 30, H // 30))))
        cv2.polylines(image, [np.array(pts, np.int32)], False, (58, 58, 60), max(1, W // 900), cv2.LINE_AA)
    paint = (222, 226, 228)
    yellow = (40, 190, 225)
    # pavement and kerb at the top
    kerb = int(H * 0.14)
    image[:kerb] = (np.clip(image[:kerb].astype(np.int16) + 52, 0, 255)).astype(np.uint8)
    tile = max(8, W // 24)
    for x in range(int(rng.integers(0, tile)), W, tile):
        cv2.line(image, (x, 0), (x, kerb - 6), (120, 122, 125), 1, cv2.LINE_AA)
    for y in range(tile // 2, kerb - 6, tile // 2):
        cv2.line(image, (0, y), (W, y), (120, 122, 125), 1, cv2.LINE_AA)
    cv2.rectangle(image, (0, kerb - max(4, H // 90)), (W, kerb), (170, 172, 175), -1)
    thick = max(2, H // 150)
    horizontal = any(d in ("ltr", "rtl") for d in directions)
    if horizontal:
        dash, gap = W // 14, W // 20
        offset = int(rng.integers(0, dash + gap))
        for frac in (0.86, 0.48):  # lane lines of each carriageway
            y = int(H * frac)
            for x in range(-offset, W, dash + gap):
                cv2.rectangle(image, (x, y - thick // 2), (x + dash, y + thick // 2), paint, -1, cv2.LINE_AA)
        y = int(H * 0.67)  # centre line: double yellow or solid white
        color = yellow if rng.random() < 0.5 else paint
        cv2.rectangle(image, (0, y - thick), (W, y - thick // 3), color, -1)
        cv2.rectangle(image, (0, y + thick // 3), (W, y + thick), color, -1)
    if any(d in ("towards", "away") for d in directions):
        vx, vy = W * 0.5, -H * 0.8
        for bx in (0.18, 0.5, 0.82):
            x_bottom = W * bx
            for k in range(0, 12, 2):  # dashes getting longer towards the camera
                t0, t1 = k / 12, (k + 1) / 12
                pts = []
                for t, side in ((t0, -1), (t1, -1), (t1, 1), (t0, 1)):
                    y = vy + (H - vy) * (0.45 + 0.55 * t)
                    s = (y - vy) / (H - vy)
                    x = vx + (x_bottom - vx) * s + side * thick * s * 1.2
                    pts.append((int(round(x)), int(round(y))))
                cv2.fillPoly(image, [np.array(pts, np.int32)], paint, cv2.LINE_AA)
    # worn paint: the asphalt texture shows through a little
    image = np.clip(image.astype(np.int16) + (grain * 0.6).astype(np.int16)[..., None], 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


# --- the scene -----------------------------------------------------------------------------------

@dataclass
class _Walker:
    sprite: Sprite
    x0: float          # left edge at frame f0
    y: int             # top row
    vx: float          # pixels per frame
    f_start: int
    f_end: int
    f0: int

    def left(self, frame: int) -> int:
        return int(round(self.x0 + self.vx * (frame - self.f0)))


@dataclass
class _Vehicle:
    vid: int
    direction: str
    lane: int
    fmt: PlateFormat
    plate: str
    display: str
    look: VehicleLook
    f_spawn: int
    age0: float              # age at the spawn frame (the first vehicle starts part way through)
    sprite: Sprite
    pyramid: list[np.ndarray]  # towards/away: the sprite as BGRA at 1, 1/2, 1/4 ... scale
    vbox: tuple[int, int, int, int]   # vehicle box in sprite pixels
    pbox: tuple[int, int, int, int]   # plate box in sprite pixels
    ground: int              # sprite row where the wheels touch the road (scale 1)
    # ltr / rtl
    x_start: float = 0.0
    vx: float = 0.0
    y_top: int = 0
    # towards / away (perspective: scale = 1 / depth)
    z_start: float = 1.0
    z_end: float = 1.0
    vz: float = 0.0
    y_h: float = 0.0         # horizon row
    y_full: float = 0.0      # sprite bottom row at scale 1
    x_vp: float = 0.0
    x_lane: float = 0.0
    frame_w: int = 0

    def state(self, frame: int) -> tuple[float, float, float] | None:
        """(left, top, scale) of the sprite at ``frame``, or None once it has left."""
        age = frame - self.f_spawn + self.age0
        h, w = self.sprite.shape
        if self.direction in ("ltr", "rtl"):
            x = self.x_start + self.vx * age
            if (self.vx > 0 and x >= self.frame_w) or (self.vx < 0 and x + w <= 0):
                return None
            return x, float(self.y_top), 1.0
        z = self.z_start - self.vz * age
        if (self.vz > 0 and z <= self.z_end) or (self.vz < 0 and z >= self.z_end):
            return None
        s = 1.0 / z
        bottom = self.y_h + s * (self.y_full - self.y_h)
        cx = self.x_vp + s * (self.x_lane - self.x_vp)
        return cx - w * s / 2, bottom - h * s, s

    def progress(self, frame: int) -> float:
        """How far along its way through the frame the vehicle is, 0 (entering) to 1 (gone)."""
        age = frame - self.f_spawn + self.age0
        if self.direction in ("ltr", "rtl"):
            return age * abs(self.vx) / (self.frame_w + self.sprite.shape[1])
        return (self.z_start - self.vz * age - self.z_start) / (self.z_end - self.z_start)


#: Seconds of green for one flow (across the frame, or along the view) while the other waits.
GREEN_S = 12.0
#: A lane takes the next vehicle once the one before it is this far along (no rear-end overlaps).
LANE_FREE_AT = 0.65


def _crosses(a: str, b: str) -> bool:
    """Whether two directions cross each other's paths (across the frame vs along the view)."""
    return (a in ("ltr", "rtl")) != (b in ("ltr", "rtl"))


def _scaled(pyramid: list[np.ndarray], s: float) -> Sprite:
    """The sprite at scale ``s``: from the BGRA pyramid level just above, linearly resized."""
    level = 0
    while level + 1 < len(pyramid) and s <= 0.5 ** (level + 1):
        level += 1
    h0, w0 = pyramid[0].shape[:2]
    w, h = max(1, int(round(w0 * s))), max(1, int(round(h0 * s)))
    src = pyramid[level]
    if (h, w) != src.shape[:2]:
        src = cv2.resize(src, (w, h), interpolation=cv2.INTER_LINEAR)
    return Sprite.from_bgra(src)


class SceneRenderer:
    """Renders a synthetic traffic scene frame by frame, with the ground truth of each frame.

    ``params``: a :class:`SyntheticParams`, a dict of its fields, or None; keyword arguments
    override single fields. ``render()`` draws the next frame (into ``out`` when given, e.g. a
    shared-memory slot) and returns ``(image, truth)``; ``frames()`` yields them all.
    """

    def __init__(self, params: SyntheticParams | dict[str, Any] | None = None, **overrides: Any) -> None:
        if isinstance(params, SyntheticParams):
            values = params.model_dump()
        else:
            values = dict(params or {})
        values.update(overrides)
        self.params = p = SyntheticParams(**values)
        self.width, self.height = p.width, p.height
        self.shape = (p.height, p.width, 3)
        self.fps = p.fps if p.fps > 0 else SIM_FPS_WHEN_UNPACED
        if p.count:
            self.total_frames: int | None = p.count
        elif p.duration_s:
            self.total_frames = max(1, int(round(p.duration_s * self.fps)))
        else:
            self.total_frames = None
        self.format_ids = resolve_formats(p.formats)
        groups: dict[str, list[str]] = {}
        for fid in self.format_ids:
            groups.setdefault(PLATE_FORMATS[fid].family, []).append(fid)
        self._families = list(groups.values())
        self.fonts = resolve_fonts(p.fonts)
        if not self.fonts:
            self.fonts = ["default"]
        self.fill = _hex_rgb(p.plate_fill) if p.plate_fill else None
        self.frame_index = 0
        self.vehicles_spawned = 0
        self._active: list[_Vehicle] = []
        self._walkers: list[_Walker] = []
        self._next_spawn = self._spawn_time(0) if p.vehicles else math.inf
        self._green_dir: str | None = None
        self._green_since = 0
        # the look of the light: a tone curve baked into background and sprites
        self._lut: np.ndarray | None = None
        if p.low_light > 0:
            x = np.arange(256, dtype=np.float32) / 255.0
            gamma = 1.0 + 1.3 * p.low_light
            gain = 1.0 - 0.6 * p.low_light
            lift = 6.0 * p.low_light
            self._lut = np.clip(lift + 255.0 * gain * np.power(x, gamma), 0, 255).astype(np.uint8)
        bg = draw_background(p.width, p.height, list(p.directions), np.random.default_rng([p.seed, 1]))
        self.background = cv2.LUT(bg, self._lut) if self._lut is not None else bg
        sigma = p.noise + 5.0 * p.low_light
        self._noise: tuple[np.ndarray, np.ndarray] | None = None
        if sigma > 0:
            field_ = np.random.default_rng([p.seed, 2]).normal(0.0, sigma, (p.height + NOISE_PAD, p.width + NOISE_PAD, 3))
            field_ = np.clip(np.round(field_), -255, 255).astype(np.int16)
            self._noise = (np.clip(field_, 0, 255).astype(np.uint8), np.clip(-field_, 0, 255).astype(np.uint8))
        self._lanes = self._make_lanes(list(p.directions))

    # -- public ------------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.total_frames is not None and self.frame_index >= self.total_frames

    def frames(self) -> Iterator[tuple[np.ndarray, list[dict[str, Any]]]]:
        """Every frame of the scene as ``(image, truth)`` (a new array each; endless if so set)."""
        while not self.finished:
            yield self.render()

    def render(self, out: np.ndarray | None = None, draw: bool = True) -> tuple[np.ndarray | None, list[dict[str, Any]]]:
        """Advance one frame; draw it into ``out`` (allocated when None) unless ``draw`` is False
        (the scene still advances and the truth is computed: for a source that must skip a frame)."""
        frame = self.frame_index
        self.frame_index += 1
        self._spawn(frame)
        layers = self._layers(frame)
        truth = self._truth(frame, layers)
        if not draw:
            return None, truth
        if out is None:
            out = np.empty(self.shape, np.uint8)
        elif out.shape != self.shape or out.dtype != np.uint8:
            raise ValueError(f"out must be uint8 {self.shape}, got {out.dtype} {out.shape}")
        np.copyto(out, self.background)
        for _vehicle, sprite, x, y in layers:
            self._blend(out, sprite, x, y)
        if self._noise is not None:
            rng = np.random.default_rng([self.params.seed, 3, frame])
            ox, oy = (int(v) for v in rng.integers(0, NOISE_PAD, 2))
            pos, neg = self._noise
            H, W = self.height, self.width
            cv2.add(out, pos[oy:oy + H, ox:ox + W], dst=out)
            cv2.subtract(out, neg[oy:oy + H, ox:ox + W], dst=out)
        return out, truth

    # -- schedule ----------------------------------------------------------------------------------

    def _spawn_time(self, k: int) -> float:
        """Frame at which vehicle k is due (it waits while the scene is full)."""
        p = self.params
        if k == 0:
            return 0.0
        if self.total_frames is not None and k >= p.vehicles:
            return math.inf
        # finite scenes: arrivals over the first 80%, so the last vehicles get through too
        span = 0.8 * self.total_frames if self.total_frames is not None else 60.0 * self.fps
        slot = span / max(1, p.vehicles)
        jitter = float(np.random.default_rng([p.seed, 4, k]).uniform(0.0, 0.7))
        return (k + jitter) * slot

    def _make_lanes(self, directions: list[str]) -> list[tuple[str, float]]:
        """(direction, position) per lane: bottom row fraction for ltr/rtl, x fraction for towards/away."""
        lanes: list[tuple[str, float]] = []
        if "ltr" in directions:
            lanes += [("ltr", 0.99), ("ltr", 0.84)]
        if "rtl" in directions:
            lanes += [("rtl", 0.64), ("rtl", 0.50)]
        both = "towards" in directions and "away" in directions
        if "towards" in directions:
            lanes += [("towards", 0.30), ("towards", 0.52)] if both else [("towards", 0.34), ("towards", 0.66)]
        if "away" in directions:
            lanes += [("away", 0.75)] if both else [("away", 0.34), ("away", 0.66)]
        return lanes

    def _spawn(self, frame: int) -> None:
        p = self.params
        while frame >= self._next_spawn and len(self._active) < p.max_simultaneous:
            busy = {v.lane for v in self._active if v.progress(frame) < LANE_FREE_AT}
            free = [i for i in range(len(self._lanes)) if i not in busy]
            if not free:
                return
            vid = self.vehicles_spawned
            rng = np.random.default_rng([p.seed, 5, vid])
            wanted = p.directions[int(rng.integers(len(p.directions)))]
            if self._active and _crosses(wanted, self._active[0].direction):
                # traffic lights: while the flowing traffic has green, the vehicle comes along with
                # it; after that the junction is cleared and the cross traffic gets its turn
                if frame - self._green_since >= GREEN_S * self.fps:
                    return
                flowing = [d for d in p.directions if not _crosses(d, self._active[0].direction)]
                wanted = flowing[int(rng.integers(len(flowing)))]
            elif not self._active and (self._green_dir is None or _crosses(wanted, self._green_dir)):
                self._green_dir, self._green_since = wanted, frame
            choice = [i for i in free if self._lanes[i][0] == wanted]
            if not choice:
                return  # its lanes are taken: it waits (and the vehicles behind it)
            lane = choice[int(rng.integers(len(choice)))]
            vehicle = self._new_vehicle(vid, lane, frame, rng)
            self._active.append(vehicle)
            self.vehicles_spawned += 1
            self._next_spawn = self._spawn_time(self.vehicles_spawned)
            if rng.random() < p.occlusion:
                walker = self._new_walker(vehicle, frame, rng)
                if walker is not None:
                    self._walkers.append(walker)

    # -- vehicles ----------------------------------------------------------------------------------

    def _new_vehicle(self, vid: int, lane: int, frame: int, rng: np.random.Generator) -> _Vehicle:
        p = self.params
        W, H = self.width, self.height
        direction, lane_pos = self._lanes[lane]
        family = self._families[int(rng.integers(len(self._families)))]  # US and EU equally often
        fmt = PLATE_FORMATS[family[int(rng.integers(len(family)))]]
        plate, display = fmt.random_text(rng)
        font = self.fonts[int(rng.integers(len(self.fonts)))]
        weights = np.array([c[2] for c in VEHICLE_COLORS])
        color = VEHICLE_COLORS[int(rng.choice(len(VEHICLE_COLORS), p=weights / weights.sum()))]
        style = list(BODY_STYLES)[int(rng.choice(len(BODY_STYLES), p=STYLE_WEIGHTS))]
        front = direction == "towards" or (direction in ("ltr", "rtl") and rng.random() < 0.5)
        look = VehicleLook(style, color[0], color[1], front)
        perspective = direction in ("towards", "away")
        lo, hi = p.plate_width
        if perspective:
            pw = float(rng.uniform(lo + 0.5 * (hi - lo), hi)) if hi > lo else float(hi)
        else:
            pw = float(rng.uniform(lo, hi))
        ph = pw / fmt.aspect
        k = float(rng.uniform(3.3, 3.9) if fmt.family == "us" else rng.uniform(2.7, 3.2))
        vw = pw * k
        ratio = BODY_STYLES[style][0]
        vw = min(vw, 0.9 * W, 0.92 * H / (ratio * 1.05))  # keep the vehicle inside the frame
        vw = max(vw, pw / 0.45)
        # the plate, supersampled like the vehicle, then rotated and skewed
        plate_img = render_plate(fmt, display, int(round(pw * SS)), int(round(ph * SS)), font, rng,
                                 rear=not front, fill=self.fill)
        quad = self._plate_quad(pw, ph, rng)
        bgr, alpha, plate_alpha, vbox, pbox = draw_vehicle(look, vw, plate_img, quad, rng)
        sh, sw = alpha.shape
        ground = vbox[3]
        T = float(rng.uniform(*p.crossing_s)) * self.fps  # frames to cross
        vehicle = _Vehicle(vid=vid, direction=direction, lane=lane, fmt=fmt, plate=plate, display=display, look=look,
                           f_spawn=frame, age0=0.0, sprite=None, pyramid=[], vbox=vbox, pbox=pbox,  # type: ignore[arg-type]
                           ground=ground)
        vehicle.frame_w = W
        bgra = np.dstack([bgr, alpha])
        if not perspective:
            speed = (W + sw) / T  # pixels per frame
            bgra, pad = _motion_blur(bgra, int(round(speed * self.fps * p.shutter_s)), vertical=False)
            vehicle.vbox = (vbox[0] + pad, vbox[1], vbox[2] + pad, vbox[3])
            vehicle.pbox = (pbox[0] + pad, pbox[1], pbox[2] + pad, pbox[3])
            sw = bgra.shape[1]
            vehicle.vx = speed if direction == "ltr" else -speed
            vehicle.x_start = -sw if direction == "ltr" else W
            bottom = lane_pos * H
            bottom = max(bottom, ground * 0.92)                    # the roof may leave the frame a little
            bottom = min(bottom, H - 2 - pbox[3] + ground)         # the plate stays inside
            vehicle.y_top = int(round(bottom - ground))
            vehicle.age0 = 0.35 * T if vid == 0 else 0.0
        else:
            blur = self._perspective(vehicle, lane_pos, T, sh, sw)
            bgra, pad = _motion_blur(bgra, blur, vertical=True)
            if pad:  # rows added above and below: the plan keeps the plate where it was
                vehicle.vbox = (vbox[0], vbox[1] + pad, vbox[2], vbox[3] + pad)
                vehicle.pbox = (pbox[0], pbox[1] + pad, pbox[2], pbox[3] + pad)
                vehicle.ground += pad
                vehicle.y_full += pad
        if self._lut is not None:
            bgra[..., :3] = _grade(np.ascontiguousarray(bgra[..., :3]), np.ascontiguousarray(bgra[..., 3]), self._lut)
        bgra = np.ascontiguousarray(bgra)
        vehicle.sprite = Sprite.from_bgra(bgra)
        if perspective:
            vehicle.pyramid = [bgra]
            while min(vehicle.pyramid[-1].shape[:2]) > 64 and len(vehicle.pyramid) < 6:
                vehicle.pyramid.append(cv2.pyrDown(vehicle.pyramid[-1]))
        return vehicle

    def _plate_quad(self, pw: float, ph: float, rng: np.random.Generator) -> np.ndarray:
        p = self.params
        corners = np.array([[-pw / 2, -ph / 2], [pw / 2, -ph / 2], [pw / 2, ph / 2], [-pw / 2, ph / 2]], np.float64)
        yaw = float(rng.uniform(-p.plate_perspective, p.plate_perspective))
        pitch = float(rng.uniform(-p.plate_perspective, p.plate_perspective)) * 0.5
        corners[:, 1] *= 1.0 + yaw * np.sign(corners[:, 0])        # one side nearer: taller
        corners[:, 0] *= 1.0 + pitch * np.sign(corners[:, 1])      # top or bottom edge nearer: wider
        angle = math.radians(float(rng.uniform(-p.plate_rotation_deg, p.plate_rotation_deg)))
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        return (corners @ rot.T).astype(np.float32)

    def _perspective(self, v: _Vehicle, lane_pos: float, T: float, rows: int, cols: int) -> int:
        """Plan a drive towards (or away from) the camera, for a sprite of ``rows`` x ``cols``.

        The sprite's scale is 1 / depth; its bottom row moves on the line to a horizon, so the
        plate is exactly ``plate_width[0]`` wide (at most 0.85 of its width at scale 1) when it
        has just come fully into view at the top, and at scale 1 when its lowest row is at the
        bottom of the frame. Returns the motion blur length in rows.
        """
        p = self.params
        W, H = self.width, self.height
        p_y1, p_y2 = v.pbox[1], v.pbox[3]
        pw = v.pbox[2] - v.pbox[0]
        s_e = min(p.plate_width[0] / max(pw, 1), 0.85)
        y_full = (H - 2) + rows - p_y2                     # sprite bottom at scale 1
        y_h = (1.0 - s_e * (y_full - rows + p_y1)) / (1.0 - s_e)
        denom = y_full - y_h
        s_start = max(0.05, -y_h / denom) if y_h < 0 else 0.05  # the sprite just above the frame
        grow = y_full - y_h - rows
        s_end = min((H - y_h) / grow, 2.0) if grow > 0 else 2.0  # its top row below the frame
        z_far, z_near = 1.0 / s_start, 1.0 / s_end
        vz = (1.0 / s_e - 1.0) / T
        v.y_h, v.y_full = y_h, y_full
        v.x_vp = W / 2
        half = cols / 2
        v.x_lane = min(max(lane_pos * W, half), W - half) if W > 2 * half else W / 2
        if v.direction == "towards":
            v.z_start, v.z_end, v.vz = z_far, z_near, vz
            v.age0 = ((z_far - 1.0 / s_e) / vz + 0.3 * T) if v.vid == 0 else 0.0
        else:
            v.z_start, v.z_end, v.vz = z_near, z_far, -vz
            v.age0 = ((1.0 - z_near) / vz + 0.3 * T) if v.vid == 0 else 0.0
        # blur along the motion: the plate's speed in rows per second around scale 0.8, times the exposure
        return int(round(denom * vz * 0.64 * self.fps * p.shutter_s))

    # -- walkers -----------------------------------------------------------------------------------

    def _new_walker(self, v: _Vehicle, frame: int, rng: np.random.Generator) -> _Walker | None:
        """A pedestrian timed to pass in front of the plate of ``v`` half way through its drive."""
        W, H = self.width, self.height
        ages = []
        f = frame
        while len(ages) < 4000:
            st = v.state(f)
            if st is None:
                break
            box = self._plate_frame_box(v, st)
            if box[0] >= 0 and box[1] >= 0 and box[2] <= W and box[3] <= H:
                ages.append((f, box, st[2]))
            f += 1
        if not ages:
            return None
        f_c, box, scale = ages[int(len(ages) * float(rng.uniform(0.3, 0.6)))]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        pw, ph = box[2] - box[0], box[3] - box[1]
        # about as tall as the vehicle (a little nearer the camera), broad enough to hide the plate
        height = max(v.sprite.shape[0] * scale * float(rng.uniform(0.8, 1.05)), pw * 1.9)
        height = min(height, H * 0.95)
        bgr, alpha = draw_walker(height, np.random.default_rng([self.params.seed, 6, v.vid]))
        if self._lut is not None:
            bgr = _grade(bgr, alpha, self._lut)
        sprite = Sprite(bgr, alpha)
        sh, sw = sprite.shape
        y = int(round(cy + float(rng.uniform(-0.15, 0.15)) * ph - 0.39 * sh))
        y = min(max(y, -int(0.1 * sh)), H - int(0.6 * sh))
        direction = 1.0 if rng.random() < 0.5 else -1.0
        speed = W * float(rng.uniform(0.06, 0.11)) / self.fps
        x_c = cx - sw / 2                  # left edge when centred on the plate
        distance = (x_c + sw) if direction > 0 else (W - x_c)
        if f_c > frame:
            speed = max(speed, distance / (f_c - frame))  # enter from the edge, not out of thin air
        speed = min(speed, W * 0.5 / self.fps)
        vx = direction * speed
        f_start = max(frame, int(math.floor(f_c - distance / speed)))
        remaining = (W - x_c) if direction > 0 else (x_c + sw)
        f_end = int(math.ceil(f_c + remaining / speed)) + 1
        return _Walker(sprite, x_c, y, vx, f_start, f_end, f_c)

    # -- per frame ---------------------------------------------------------------------------------

    def _plate_frame_box(self, v: _Vehicle, st: tuple[float, float, float]) -> tuple[int, int, int, int]:
        x, y, s = st
        xi, yi = int(round(x)), int(round(y))
        if s == 1.0:
            b = v.pbox
            return b[0] + xi, b[1] + yi, b[2] + xi, b[3] + yi
        h0, w0 = v.sprite.shape
        w, h = max(1, int(round(w0 * s))), max(1, int(round(h0 * s)))
        fx, fy = w / w0, h / h0
        b = v.pbox
        return (int(round(b[0] * fx)) + xi, int(round(b[1] * fy)) + yi, int(round(b[2] * fx)) + xi, int(round(b[3] * fy)) + yi)

    def _vehicle_frame_box(self, v: _Vehicle, st: tuple[float, float, float]) -> tuple[int, int, int, int]:
        x, y, s = st
        xi, yi = int(round(x)), int(round(y))
        h0, w0 = v.sprite.shape
        w, h = max(1, int(round(w0 * s))), max(1, int(round(h0 * s)))
        fx, fy = w / w0, h / h0
        b = v.vbox
        return (int(round(b[0] * fx)) + xi, int(round(b[1] * fy)) + yi, int(round(b[2] * fx)) + xi, int(round(b[3] * fy)) + yi)

    def _layers(self, frame: int) -> list[tuple[_Vehicle | None, Sprite, int, int]]:
        """What to draw this frame, back to front: vehicles by the row they stand on, then walkers."""
        placed: list[tuple[float, _Vehicle, Sprite, int, int]] = []
        alive: list[_Vehicle] = []
        for v in self._active:
            st = v.state(frame)
            if st is None:
                continue
            alive.append(v)
            x, y, s = st
            sprite = v.sprite if s == 1.0 else _scaled(v.pyramid, s)
            xi, yi = int(round(x)), int(round(y))
            depth = yi + v.ground * (sprite.shape[0] / v.sprite.shape[0])
            placed.append((depth, v, sprite, xi, yi))
        self._active = alive
        placed.sort(key=lambda item: (item[0], item[1].vid))
        layers: list[tuple[_Vehicle | None, Sprite, int, int]] = [(v, s, x, y) for _d, v, s, x, y in placed]
        self._walkers = [w for w in self._walkers if frame < w.f_end]
        for w in self._walkers:
            if frame >= w.f_start:
                layers.append((None, w.sprite, w.left(frame), w.y))
        return layers

    def _blend(self, out: np.ndarray, sprite: Sprite, x: int, y: int) -> None:
        h, w = sprite.shape
        H, W = self.height, self.width
        x1, y1, x2, y2 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
        if x2 <= x1 or y2 <= y1:
            return
        roi = out[y1:y2, x1:x2]
        sx, sy = x1 - x, y1 - y
        cv2.multiply(roi, sprite.inv[sy:sy + y2 - y1, sx:sx + x2 - x1], dst=roi, scale=1 / 255.0)
        cv2.add(roi, sprite.bgr[sy:sy + y2 - y1, sx:sx + x2 - x1], dst=roi)

    def _truth(self, frame: int, layers: list[tuple[_Vehicle | None, Sprite, int, int]]) -> list[dict[str, Any]]:
        W, H = self.width, self.height
        objects = []
        for index, (v, sprite, x, y) in enumerate(layers):
            if v is None:
                continue
            st = v.state(frame)
            assert st is not None
            vb = self._vehicle_frame_box(v, st)
            vbox = (max(0, vb[0]), max(0, vb[1]), min(W, vb[2]), min(H, vb[3]))
            if vbox[2] <= vbox[0] or vbox[3] <= vbox[1]:
                continue  # not in the frame (yet / any more)
            pb = self._plate_frame_box(v, st)
            area = max(1, (pb[2] - pb[0]) * (pb[3] - pb[1]))
            cb = (max(0, pb[0]), max(0, pb[1]), min(W, pb[2]), min(H, pb[3]))
            inside = cb[2] > cb[0] and cb[3] > cb[1]
            if inside:
                hidden = np.zeros((cb[3] - cb[1], cb[2] - cb[0]), bool)
                for _o, other, ox, oy in layers[index + 1:]:
                    oh, ow = other.shape
                    ix1, iy1 = max(cb[0], ox), max(cb[1], oy)
                    ix2, iy2 = min(cb[2], ox + ow), min(cb[3], oy + oh)
                    if ix2 <= ix1 or iy2 <= iy1:
                        continue
                    hidden[iy1 - cb[1]: iy2 - cb[1], ix1 - cb[0]: ix2 - cb[0]] |= \
                        other.alpha[iy1 - oy: iy2 - oy, ix1 - ox: ix2 - ox] >= 128
                seen = int(hidden.size - np.count_nonzero(hidden))
            else:
                seen = 0
            occlusion = 1.0 - seen / area
            in_frame = pb[0] >= 0 and pb[1] >= 0 and pb[2] <= W and pb[3] <= H
            objects.append({
                "vehicle_id": v.vid,
                "plate": v.plate,
                "plate_display": v.display,
                "format": v.fmt.id,
                "vehicle_box": [int(c) for c in vbox],
                "plate_box": [int(c) for c in cb] if inside else None,
                "plate_visible": bool(in_frame and occlusion <= OCCLUDED_ABOVE),
                "occlusion": round(float(occlusion), 3),
                "direction": v.direction,
                "vehicle_type": v.look.style,
                "vehicle_color": v.look.color_name,
            })
        objects.sort(key=lambda o: o["vehicle_id"])
        return objects
