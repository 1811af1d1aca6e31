"""Licence-plate formats, random plate texts and plate images for the synthetic traffic source.

Each :class:`PlateFormat` knows how to draw a random plate text (``display``, with the spacing
printed on the plate), its canonical form (``canonical``: letters and digits only, what an OCR
stage is expected to read) and a regular expression that every canonical text of the format
matches. :func:`render_plate` paints a plate image (BGR plus an alpha mask) with the format's
colours: white or yellow ground, coloured state header for US plates, the blue EU band with the
country code for European ones.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "PLATE_FORMATS", "FAMILIES", "PlateFormat", "canonical", "resolve_formats",
    "DEFAULT_FONTS", "FONT_DIRS", "resolve_font", "resolve_fonts", "load_font", "render_plate",
]

DIGITS = "0123456789"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

Rng = np.random.Generator


def _pick(rng: Rng, alphabet: str, n: int) -> str:
    return "".join(alphabet[int(i)] for i in rng.integers(0, len(alphabet), n))


def _number(rng: Rng, digits: int, leading_zero: bool = False) -> str:
    """A number of exactly ``digits`` digits (no leading zero unless allowed, never all zeros)."""
    while True:
        text = _pick(rng, DIGITS, digits)
        if text.strip("0") and (leading_zero or text[0] != "0"):
            return text


def canonical(display: str) -> str:
    """The plate text an OCR stage should read: upper-case letters and digits only."""
    return re.sub(r"[^0-9A-Z]", "", display.upper())


# --- plate texts ---------------------------------------------------------------------------------

def _us_ca(rng: Rng) -> str:  # 7ABC123
    return _pick(rng, "123456789", 1) + _pick(rng, "ABCDEFGHJKLMNPRSTUVWXYZ", 3) + _number(rng, 3, True)


def _us_ny(rng: Rng) -> str:  # ABC-1234
    return _pick(rng, "ABCDEFGHJKLMNPRSTUVWXYZ", 3) + "-" + _number(rng, 4, True)


def _us_tx(rng: Rng) -> str:  # ABC-1234
    return _pick(rng, "BCDFGHJKLMNPRSTVWXYZ", 3) + "-" + _number(rng, 4, True)


def _us_il(rng: Rng) -> str:  # AB 12345
    return _pick(rng, "ABCDEFGHJKLMNPRSTUVWXYZ", 2) + " " + _number(rng, 5, True)


def _us_nj(rng: Rng) -> str:  # A12-BCD
    return _pick(rng, "ABCDEFGHJKLMNPRSTUVWXYZ", 1) + _number(rng, 2, True) + "-" + _pick(rng, "ABCDEFGHJKLMNPRSTUVWXYZ", 3)


DE_CITIES = ("B", "M", "K", "F", "S", "D", "H", "HH", "HB", "DO", "BN", "KA", "MZ", "HD", "WI", "KI", "DD",
             "L", "N", "E", "OB", "GE", "BO", "MS", "AC", "OS", "FR", "UL", "RO", "PB", "LU", "BAD", "LDK", "MYK")


def _eu_de(rng: Rng) -> str:  # B MW 1234 (at most 8 characters)
    city = DE_CITIES[int(rng.integers(len(DE_CITIES)))]
    letters = _pick(rng, "ABCDEFGHJKLMNPRSTUVWXYZ", int(rng.integers(1, 3)))
    room = 8 - len(city) - len(letters)
    digits = _number(rng, int(rng.integers(1, min(4, room) + 1)))
    return f"{city} {letters} {digits}"


FR_LETTERS = "ABCDEFGHJKLMNPQRSTVWXYZ"  # no I, O, U


def _eu_fr(rng: Rng) -> str:  # AB-123-CD
    return f"{_pick(rng, FR_LETTERS, 2)}-{_number(rng, 3, True)}-{_pick(rng, FR_LETTERS, 2)}"


UK_LETTERS = "ABCDEFGHJKLMNOPRSTUVWXY"  # no I, Q, Z


def _eu_uk(rng: Rng) -> str:  # AB12 CDE
    age = int(rng.choice(list(range(2, 26)) + list(range(51, 75))))
    return f"{_pick(rng, 'ABCDEFGHKLMNOPRSVWY', 2)}{age:02d} {_pick(rng, UK_LETTERS, 3)}"


NL_LETTERS = "BDFGHJKLNPRSTVXZ"  # Dutch plates use consonants only


def _eu_nl(rng: Rng) -> str:  # sidecodes 8, 9 and 10: 1-ABC-23, AB-123-C, A-123-BC
    code = int(rng.integers(3))
    if code == 0:
        return f"{_number(rng, 1)}-{_pick(rng, NL_LETTERS, 3)}-{_number(rng, 2, True)}"
    if code == 1:
        return f"{_pick(rng, NL_LETTERS, 2)}-{_number(rng, 3, True)}-{_pick(rng, NL_LETTERS, 1)}"
    return f"{_pick(rng, NL_LETTERS, 1)}-{_number(rng, 3, True)}-{_pick(rng, NL_LETTERS, 2)}"


IT_LETTERS = "ABCDEFGHJKLMNPRSTVWXYZ"  # no I, O, Q, U


def _eu_it(rng: Rng) -> str:  # AB 123 CD
    return f"{_pick(rng, IT_LETTERS, 2)} {_number(rng, 3, True)} {_pick(rng, IT_LETTERS, 2)}"


ES_LETTERS = "BCDFGHJKLMNPRSTVWXYZ"  # consonants, no Q


def _eu_es(rng: Rng) -> str:  # 1234 BCD
    return f"{_number(rng, 4, True)} {_pick(rng, ES_LETTERS, 3)}"


# --- styles --------------------------------------------------------------------------------------

RGB = tuple[int, int, int]
WHITE: RGB = (242, 242, 238)
EU_YELLOW: RGB = (250, 204, 22)
EU_BLUE: RGB = (0, 51, 153)
BLACK: RGB = (18, 18, 20)
NAVY: RGB = (22, 38, 110)


@dataclass(frozen=True)
class PlateFormat:
    """One plate format: how its texts look, how to draw one, and the plate's colours."""

    id: str                       # e.g. "us-ca", "eu-de"
    name: str
    family: str                   # "us" or "eu" (European style, the UK included)
    example: str                  # display form of a typical plate
    pattern: str                  # regular expression every canonical text matches (fullmatch)
    make: Callable[[Rng], str]    # a random display text
    aspect: float                 # plate width / height
    ground: RGB = WHITE           # plate colour (RGB)
    ink: RGB = BLACK              # character colour (RGB)
    header: str = ""              # US: state name printed above the characters
    header_ink: RGB = NAVY
    footer: str = ""              # US: slogan below the characters
    band: str = ""                # EU: country code in the blue band on the left
    right_band: str = ""          # FR / IT: blue band on the right ("dept" / "year")
    rear_ground: RGB | None = None  # UK: yellow rear plates
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", re.compile(self.pattern))

    def random_text(self, rng: Rng) -> tuple[str, str]:
        """``(canonical, display)`` of a new random plate."""
        display = self.make(rng)
        return canonical(display), display

    def matches(self, text: str) -> bool:
        return self.regex.fullmatch(text) is not None


US_ASPECT = 2.0          # 12 x 6 inches
EU_ASPECT = 520 / 110    # 520 x 110 mm

PLATE_FORMATS: dict[str, PlateFormat] = {f.id: f for f in [
    PlateFormat("us-ca", "California", "us", "7ABC123", r"[1-9][A-Z]{3}[0-9]{3}", _us_ca, US_ASPECT,
                ink=NAVY, header="California", header_ink=(200, 30, 40), footer="dmv.ca.gov"),
    PlateFormat("us-ny", "New York", "us", "ABC-1234", r"[A-Z]{3}[0-9]{4}", _us_ny, US_ASPECT,
                ink=NAVY, header="NEW YORK", header_ink=NAVY, footer="EXCELSIOR"),
    PlateFormat("us-tx", "Texas", "us", "ABC-1234", r"[A-Z]{3}[0-9]{4}", _us_tx, US_ASPECT,
                header="TEXAS", header_ink=BLACK, footer="THE LONE STAR STATE"),
    PlateFormat("us-il", "Illinois", "us", "AB 12345", r"[A-Z]{2}[0-9]{5}", _us_il, US_ASPECT,
                ink=NAVY, header="Illinois", header_ink=(170, 20, 30), footer="LAND OF LINCOLN"),
    PlateFormat("us-nj", "New Jersey", "us", "A12-BCD", r"[A-Z][0-9]{2}[A-Z]{3}", _us_nj, US_ASPECT,
                ground=(244, 226, 150), header="NEW JERSEY", header_ink=BLACK, footer="Garden State"),
    PlateFormat("eu-de", "Germany", "eu", "B MW 1234", r"(?=[A-Z0-9]{3,8}$)[A-Z]{1,3}[A-Z]{1,2}[1-9][0-9]{0,3}",
                _eu_de, EU_ASPECT, band="D"),
    PlateFormat("eu-fr", "France", "eu", "AB-123-CD", r"[A-HJ-NP-TV-Z]{2}[0-9]{3}[A-HJ-NP-TV-Z]{2}", _eu_fr,
                EU_ASPECT, band="F", right_band="dept"),
    PlateFormat("eu-uk", "United Kingdom", "eu", "AB12 CDE", r"[A-Z]{2}[0-9]{2}[A-HJ-PR-Y]{3}", _eu_uk, EU_ASPECT,
                band="UK", rear_ground=EU_YELLOW),
    PlateFormat("eu-nl", "Netherlands", "eu", "GB-123-K",
                r"[0-9][BDFGHJKLNPRSTVXZ]{3}[0-9]{2}|[BDFGHJKLNPRSTVXZ]{2}[0-9]{3}[BDFGHJKLNPRSTVXZ]"
                r"|[BDFGHJKLNPRSTVXZ][0-9]{3}[BDFGHJKLNPRSTVXZ]{2}", _eu_nl, EU_ASPECT, ground=EU_YELLOW, band="NL"),
    PlateFormat("eu-it", "Italy", "eu", "AB 123 CD", r"[A-HJ-NPR-TV-Z]{2}[0-9]{3}[A-HJ-NPR-TV-Z]{2}", _eu_it,
                EU_ASPECT, band="I", right_band="year"),
    PlateFormat("eu-es", "Spain", "eu", "1234 BCD", r"[0-9]{4}[B-DF-HJ-NPR-TV-Z]{3}", _eu_es, EU_ASPECT, band="E"),
]}

FAMILIES: dict[str, list[str]] = {
    "us": [k for k, f in PLATE_FORMATS.items() if f.family == "us"],
    "eu": [k for k, f in PLATE_FORMATS.items() if f.family == "eu"],
    "all": list(PLATE_FORMATS),
}


def resolve_formats(names: list[str]) -> list[str]:
    """Format ids from ids and family names (``us``, ``eu``, ``all``), in order, without repeats."""
    out: list[str] = []
    for name in names:
        key = name.strip().lower()
        ids = FAMILIES.get(key) or ([key] if key in PLATE_FORMATS else None)
        if ids is None:
            known = ", ".join(list(FAMILIES) + list(PLATE_FORMATS))
            raise ValueError(f"unknown plate format {name!r}; known: {known}")
        out.extend(i for i in ids if i not in out)
    return out


# --- fonts ---------------------------------------------------------------------------------------

FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype", "/usr/share/fonts",
             "/usr/local/share/fonts", os.path.expanduser("~/.fonts"), os.path.expanduser("~/.local/share/fonts"))
DEFAULT_FONTS = ("DejaVuSans-Bold.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansCondensed-Bold.ttf", "default")


@functools.lru_cache(maxsize=64)
def resolve_font(spec: str) -> str:
    """A font file path for ``spec`` (a path, or a file name searched in FONT_DIRS, ``.ttf``
    optional), or ``"default"`` for Pillow's built-in scalable font. Raises ValueError if absent."""
    if spec == "default":
        return spec
    if os.path.isfile(spec):
        return os.path.abspath(spec)
    names = {spec, spec + ".ttf", spec + ".otf"}
    for base in FONT_DIRS:
        if not os.path.isdir(base):
            continue
        for root, _dirs, files in os.walk(base):
            for name in names & set(files):
                return os.path.join(root, name)
    raise ValueError(f"font {spec!r} not found (give a path, 'default', or a file name in {', '.join(FONT_DIRS)})")


def resolve_fonts(specs: list[str] | tuple[str, ...]) -> list[str]:
    """Fonts to draw plate characters with; an empty list gives DEFAULT_FONTS (those present)."""
    if specs:
        return [resolve_font(s) for s in specs]
    found = []
    for spec in DEFAULT_FONTS:
        try:
            found.append(resolve_font(spec))
        except ValueError:
            continue
    return found


@functools.lru_cache(maxsize=32)
def load_font(spec: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if spec == "default":
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(spec, size)


TEXT_PX = 160  # glyphs are drawn this tall, then scaled into their box


def _plate_char(char: str) -> bool:
    """Capitals and digits: what plate type sets in the cap band, apart (not dashes, dots or the
    lower case of a footer)."""
    return char.isupper() or char.isdigit()


@functools.lru_cache(maxsize=512)
def _glyph_mask(char: str, font: str) -> tuple[np.ndarray, int, int]:
    """The ink of one character, ``(mask, left, top)`` in the font's drawing coordinates at
    TEXT_PX. A capital or digit whose ink leaves the cap band (the descending J and the tailed Q
    of DejaVu Sans) is squeezed upright to stand on the baseline within the cap height:
    plate typefaces (FE-Schrift, DIN 1451, the US state faces) have no descenders, and a reader
    trained on real plates reads a dropped J as I or L: an error of the font, not of the reader."""
    face = load_font(font, TEXT_PX)
    left, top, right, bottom = face.getbbox(char)
    if right <= left or bottom <= top:
        return np.zeros((0, 0), np.uint8), left, top
    image = Image.new("L", (right - left, bottom - top), 0)
    ImageDraw.Draw(image).text((-left, -top), char, fill=255, font=face)
    mask = np.asarray(image)
    _, cap_top, _, cap_bottom = face.getbbox("H0")
    slack = (cap_bottom - cap_top) * 0.05
    if _plate_char(char) and (top < cap_top - slack or bottom > cap_bottom + slack):
        top = max(top, cap_top)
        mask = cv2.resize(mask, (right - left, min(bottom, cap_bottom) - top), interpolation=cv2.INTER_AREA)
    return mask, left, top


@functools.lru_cache(maxsize=512)
def _text_mask(text: str, font: str) -> tuple[np.ndarray, int, int]:
    """The ink of ``text`` as a uint8 mask cropped to its bounding box, with the row of the cap
    line and the cap height in the mask (so a short dash keeps its size). Characters are set one
    by one at the font's advances, unkerned as plate type is."""
    face = load_font(font, TEXT_PX)
    _, cap_top, _, cap_bottom = face.getbbox("H0")
    bearing = face.getbbox("H")[0]
    glyphs, pen = [], 0.0
    for char in text:
        mask, left, top = _glyph_mask(char, font)
        advance = face.getlength(char)
        if _plate_char(char):
            # plate capitals keep clear of each other: DejaVu's J hooks under the letter before it
            left = max(left, bearing)
            advance = max(advance, left + mask.shape[1] + bearing)
        glyphs.append((int(round(pen)), mask, left, top))
        pen += advance
    inked = [(x + left, top, mask) for x, mask, left, top in glyphs if mask.size]
    if not inked:
        return np.zeros((1, 1), np.uint8), 0, 1
    x0 = min(x for x, _, _ in inked)
    y0 = min(top for _, top, _ in inked)
    x1 = max(x + m.shape[1] for x, _, m in inked)
    y1 = max(top + m.shape[0] for _, top, m in inked)
    canvas = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for x, top, mask in inked:
        cell = canvas[top - y0: top - y0 + mask.shape[0], x - x0: x - x0 + mask.shape[1]]
        np.maximum(cell, mask, out=cell)
    return canvas, cap_top - y0, max(1, cap_bottom - cap_top)


def _fit_text(canvas: np.ndarray, box: tuple[float, float, float, float], text: str, font: str, color: RGB,
              emboss: bool = False) -> None:
    """Paint ``text`` into ``box`` (x, y, w, h) of an RGB canvas: capitals as tall as the box,
    squeezed horizontally where it would be wider (plates use condensed type), centred."""
    x, y, w, h = box
    if w < 1 or h < 1:
        return
    mask, cap_row, cap_h = _text_mask(text, font)
    mh, mw = mask.shape
    scale = h / cap_h
    th = max(1, int(round(mh * scale)))
    tw = max(1, int(round(min(mw * scale, w))))
    interp = cv2.INTER_AREA if th < mh else cv2.INTER_LINEAR
    small = cv2.resize(mask, (tw, th), interpolation=interp)
    x0 = int(round(x + (w - tw) / 2))
    y0 = int(round(y - cap_row * scale))
    layers = [(1, (0.55, 0.55, 0.55)), (0, None)] if emboss else [(0, None)]
    for shift, shade in layers:
        x1, y1 = x0 + shift, y0 + shift
        cx1, cy1 = max(0, x1), max(0, y1)
        cx2, cy2 = min(canvas.shape[1], x1 + tw), min(canvas.shape[0], y1 + th)
        if cx2 <= cx1 or cy2 <= cy1:
            continue
        alpha = small[cy1 - y1: cy2 - y1, cx1 - x1: cx2 - x1].astype(np.float32)[..., None] / 255.0
        region = canvas[cy1:cy2, cx1:cx2].astype(np.float32)
        ink = np.array(color, np.float32) if shade is None else region * np.array(shade, np.float32)
        canvas[cy1:cy2, cx1:cx2] = (region * (1 - alpha) + ink * alpha + 0.5).astype(np.uint8)


def _stars(draw: ImageDraw.ImageDraw, cx: float, cy: float, radius: float, dot: float) -> None:
    for k in range(12):
        angle = 2 * np.pi * k / 12
        x, y = cx + radius * np.sin(angle), cy - radius * np.cos(angle)
        draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=(255, 204, 0))


def render_plate(fmt: PlateFormat, display: str, width: int, height: int, font: str, rng: Rng,
                 *, rear: bool = True, fill: RGB | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A plate of ``width`` x ``height`` pixels: ``(bgr, alpha)``, both uint8.

    ``fill`` paints the whole plate one flat colour with square corners and no text (tests of
    the truth boxes find it by colour).
    """
    width, height = max(8, int(width)), max(4, int(height))
    alpha = np.full((height, width), 255, np.uint8)
    if fill is not None:
        rgb = np.empty((height, width, 3), np.uint8)
        rgb[:] = fill
        return np.ascontiguousarray(rgb[..., ::-1]), alpha
    ground = fmt.rear_ground if (rear and fmt.rear_ground) else fmt.ground
    # a little dirt and wear: the ground colour varies a few levels per plate
    shade = 1.0 - float(rng.uniform(0.0, 0.08))
    ground = tuple(int(c * shade) for c in ground)  # type: ignore[assignment]
    image = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    radius = max(1, int(height * (0.06 if fmt.family == "us" else 0.08)))
    draw.rounded_rectangle((0, 0, width - 1, height - 1), radius=radius, fill=ground)
    border = max(1, int(round(height * 0.025)))
    w, h = width, height
    text_box: tuple[float, float, float, float]
    if fmt.family == "us":
        draw.rounded_rectangle((border, border, w - 1 - border, h - 1 - border), radius=radius,
                               outline=(70, 70, 75), width=border)
        if fmt.id == "us-ny":
            draw.rectangle((2 * border, int(h * 0.80), w - 1 - 2 * border, h - 1 - 2 * border), fill=(238, 168, 40))
        for bx in (0.2, 0.8):  # bolt holes
            r = max(1.0, h * 0.035)
            draw.ellipse((w * bx - r, h * 0.1 - r, w * bx + r, h * 0.1 + r), fill=(150, 150, 150))
        canvas = np.array(image)
        _fit_text(canvas, (w * 0.27, h * 0.05, w * 0.46, h * 0.15), fmt.header, font, fmt.header_ink)
        text_box = (w * 0.06, h * 0.25, w * 0.88, h * 0.50)
        _fit_text(canvas, (w * 0.25, h * 0.83, w * 0.5, h * 0.09), fmt.footer, font, fmt.header_ink)
        _fit_text(canvas, text_box, display, font, fmt.ink, emboss=True)
    else:
        draw.rounded_rectangle((0, 0, w - 1, h - 1), radius=radius, outline=BLACK, width=border)
        band_w = w * 0.085
        x_left, x_right = band_w + w * 0.02, w * 0.975
        has_band = bool(fmt.band) and not (fmt.id == "eu-uk" and rng.random() < 0.5)
        if has_band:
            draw.rounded_rectangle((border, border, band_w, h - 1 - border), radius=radius, fill=EU_BLUE)
            _stars(draw, band_w / 2 + border / 2, h * 0.3, band_w * 0.27, max(0.6, band_w * 0.045))
        else:
            x_left = w * 0.03
        if fmt.right_band:
            draw.rounded_rectangle((w - 1 - band_w, border, w - 1 - border, h - 1 - border), radius=radius, fill=EU_BLUE)
            x_right = w - band_w - w * 0.02
        canvas = np.array(image)
        if has_band:
            _fit_text(canvas, (border, h * 0.58, band_w, h * 0.28), fmt.band, font, (255, 255, 255))
        if fmt.right_band == "dept":
            dept = f"{int(rng.integers(1, 96)):02d}"
            _fit_text(canvas, (w - band_w, h * 0.55, band_w - border, h * 0.3), dept, font, (255, 255, 255))
            _fit_text(canvas, (w - band_w + band_w * 0.25, h * 0.15, band_w * 0.5, h * 0.3), "*", font, (255, 255, 255))
        elif fmt.right_band == "year":
            year = f"{int(rng.integers(10, 26)):02d}"
            _fit_text(canvas, (w - band_w, h * 0.12, band_w - border, h * 0.26), year, font, (255, 204, 0))
            prov = _pick(rng, "ABCDEFGHLMNPRSTV", 2)
            _fit_text(canvas, (w - band_w, h * 0.58, band_w - border, h * 0.28), prov, font, (255, 255, 255))
        text_box = (x_left, h * 0.15, x_right - x_left, h * 0.70)
        _fit_text(canvas, text_box, display, font, fmt.ink, emboss=True)
    # rounded corners: the plate's alpha follows the ground's outline
    corner = np.zeros((height, width), np.uint8)
    cimg = Image.new("L", (width, height), 0)
    ImageDraw.Draw(cimg).rounded_rectangle((0, 0, width - 1, height - 1), radius=radius, fill=255)
    corner[:] = np.asarray(cimg)
    return np.ascontiguousarray(canvas[..., ::-1]), corner
