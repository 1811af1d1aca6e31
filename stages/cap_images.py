"""Image folders for ``source.images``: listing in natural order, and OpenALPR benchmark truth.

The OpenALPR benchmark layout (DESIGN.md): beside ``NAME.jpg`` a ``NAME.txt`` holding one line per
plate, ``NAME.jpg<TAB>x<TAB>y<TAB>w<TAB>h<TAB>PLATE`` (the plate's box in pixels: top-left corner,
width, height). :func:`read_openalpr_truth` turns it into ground-truth objects in the format of
docs/vision.md, with the vehicle fields None (the benchmark knows plates only).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pgm", ".ppm", ".pnm"})


class TruthFormatError(ValueError):
    """A ``.txt`` beside an image that is not in the OpenALPR benchmark layout."""


def natural_key(path: Path, root: Path) -> list[Any]:
    """Sort key: ``img2`` before ``img10``; folders first by name, then files."""
    rel = path.relative_to(root).as_posix().lower()
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", rel)]


def list_images(folder: Path, pattern: str = "*") -> list[Path]:
    """Image files under ``folder`` matching ``pattern`` (``**/`` recurses), in natural order."""
    found = [p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(found, key=lambda p: natural_key(p, folder))


def truth_file(image: Path) -> Path | None:
    """``NAME.txt`` beside ``NAME.jpg``, if there is one."""
    candidate = image.with_suffix(".txt")
    return candidate if candidate.is_file() else None


def parse_openalpr_line(line: str, where: str = "") -> dict[str, Any]:
    """One ``image  x  y  w  h  PLATE`` line as a truth object (docs/vision.md)."""
    fields = line.rstrip("\r\n").split("\t")
    if len(fields) < 6:
        fields = line.split()  # some copies of the benchmark use spaces
    if len(fields) < 6:
        raise TruthFormatError(f"{where}: expected 'image<TAB>x<TAB>y<TAB>w<TAB>h<TAB>PLATE', got {line.strip()!r}")
    try:
        x, y, w, h = (float(v) for v in fields[1:5])
    except ValueError as exc:
        raise TruthFormatError(f"{where}: x, y, w, h must be numbers, got {fields[1:5]}") from exc
    if w <= 0 or h <= 0:
        raise TruthFormatError(f"{where}: the plate box has no area ({w} x {h})")
    plate = " ".join(fields[5:]).strip()
    return {
        "vehicle_id": None,
        "plate": plate,
        "format": None,
        "vehicle_box": None,
        "plate_box": [x, y, x + w, y + h],
        "plate_visible": True,
    }


def read_openalpr_truth(image: Path, log: logging.Logger | None = None) -> list[dict[str, Any]] | None:
    """The truth objects for ``image`` from ``NAME.txt`` beside it; None when there is no such
    file or it is not in the benchmark layout (logged), [] for an image with no plate."""
    path = truth_file(image)
    if path is None:
        return None
    objects = []
    try:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if line.strip():
                objects.append(parse_openalpr_line(line, f"{path}:{number}"))
    except TruthFormatError as exc:
        if log is not None:
            log.warning("ignoring ground truth: %s", exc)
        return None
    return objects


def scale_truth(objects: list[dict[str, Any]], sx: float, sy: float) -> list[dict[str, Any]]:
    """Truth boxes for a frame resized by ``sx`` horizontally and ``sy`` vertically."""
    out = []
    for obj in objects:
        obj = dict(obj)
        for key in ("plate_box", "vehicle_box"):
            box = obj.get(key)
            if box is not None:
                obj[key] = [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]
        out.append(obj)
    return out
