"""``alpr-topo bench accuracy``: plate detection recall and exact-match reads on a labelled folder.

The folder is in the OpenALPR benchmark layout (DESIGN.md, a contract): images, each with a
``.txt`` beside it holding one line per plate, ``image<TAB>x<TAB>y<TAB>w<TAB>h<TAB>PLATE``.

The detect and OCR stages of a topology (stage types ``detect.*`` and ``ocr.*``, in the
topology's order; sources and sinks are left out) run in this process, through their classes'
``setup / process / teardown``, on each image in turn. Without a topology those of the embedded
default, ``topologies/cpu.yaml``, run.

* ``detection_recall``: share of ground-truth plates with a plate detection (kind ``plate`` in
  ``env.detections``) of IoU > 0.4.
* ``exact_match``: share of ground-truth plates read exactly (upper-case letters and digits
  compared, spaces and dashes ignored) by a read in ``env.plates`` (dicts with ``text`` and
  ``box``) whose box has IoU > 0.4 with the plate; None when the topology has no OCR stage.
* ``ms_per_image``: wall time of the detect and OCR stages' ``process`` per image (decoding the
  image file is not counted).
* ``misses``: every plate not detected (``read`` None) or read wrongly (``read`` the text).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .bench_run import DEFAULT_TOPOLOGY, InProcess, inline

__all__ = ["IMAGE_SUFFIXES", "Truth", "load_dataset", "main_text", "normalize_plate", "run"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
IOU_MIN = 0.4
FAMILIES = ("detect", "ocr")


@dataclass
class Truth:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    text: str


def normalize_plate(text: str | None) -> str:
    """``"7ab-c 123"`` -> ``"7ABC123"``: what exact-match compares."""
    return re.sub(r"[^0-9A-Z]", "", (text or "").upper())


def load_dataset(folder: str | os.PathLike[str]) -> list[tuple[Path, list[Truth]]]:
    """(image, plates) for every image of ``folder`` that has a ``.txt`` beside it, sorted by name."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    items = []
    for image in sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        label = image.with_suffix(".txt")
        if not label.is_file():
            continue
        plates = []
        for line in label.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) < 6:
                parts = line.split()
            if len(parts) < 6:
                continue
            try:
                x, y, w, h = (float(v) for v in parts[1:5])
            except ValueError:
                continue
            plates.append(Truth((x, y, x + w, y + h), " ".join(parts[5:]).strip()))
        items.append((image, plates))
    if not items:
        raise FileNotFoundError(f"{root} holds no image with a .txt label beside it (OpenALPR benchmark layout)")
    return items


def _iou(a: Any, b: Any) -> float:
    from ..stages.det_base import box_iou

    return box_iou([float(v) for v in a], [float(v) for v in b])


class _Chain:
    """The detect/OCR stages of a topology, instantiated in this process."""

    def __init__(self, topology: str | None) -> None:
        from ..core.topology import load

        path = str(topology or DEFAULT_TOPOLOGY)
        topo = load(path)
        decls = [(name, topo.stages[name].type, topo.stages[name].params) for name in topo.order()
                 if topo.stages[name].type.split(".")[0] in FAMILIES]
        if not decls:
            raise ValueError(f"{path} has no detect.* or ocr.* stage to measure")
        self.label = ("embedded default: " if topology is None else f"{path}: ") + \
            ", ".join(f"{n} ({t})" for n, t, _ in decls)
        self.types = [t for _, t, _ in decls]
        self.has_ocr = any(t.split(".")[0] == "ocr" for t in self.types)
        self.chain = InProcess(decls, run="bench-accuracy")

    def __enter__(self) -> "_Chain":
        self.chain.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.chain.__exit__()

    def run(self, image: np.ndarray, frame_id: int) -> tuple[Any, float]:
        """The envelope after every stage, and the seconds spent in their ``process``."""
        from ..core.envelope import Envelope

        env = Envelope(camera_id="bench", frame_id=frame_id, frame=inline(image))
        t0 = time.perf_counter()
        outs = list(self.chain.feed(env))
        return (outs[0] if outs else env), time.perf_counter() - t0


def run(dataset: str, topology: str | None = None, limit: int | None = None,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure a topology's detect (and OCR) stages on ``dataset``; the DESIGN.md JSON object."""
    import cv2

    items = load_dataset(dataset)
    if limit is not None:
        items = items[: max(0, int(limit))]
    say = progress or (lambda msg: None)
    n_plates = detected = read_ok = n_dets = 0
    spent = 0.0
    misses: list[dict[str, Any]] = []
    unreadable: list[str] = []
    with _Chain(topology) as chain:
        say(f"bench accuracy: {len(items)} images of {dataset} through {chain.label}")
        for index, (path, truths) in enumerate(items):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                unreadable.append(path.name)
                continue
            env, seconds = chain.run(image, index)
            spent += seconds
            plates = [d for d in env.detections if d.get("kind") == "plate"]
            n_dets += len(plates)
            for truth in truths:
                n_plates += 1
                hit = any(_iou(d["box"], truth.box) > IOU_MIN for d in plates)
                detected += hit
                read = None
                if chain.has_ocr:
                    reads = [(p, _iou(p["box"], truth.box)) for p in env.plates if p.get("box") is not None]
                    reads = [(p, v) for p, v in reads if v > IOU_MIN]
                    if reads:
                        best = max(reads, key=lambda pv: pv[1])[0]
                        # the OCR stage's region-corrected text when it gives one, else its raw read
                        read = str(best.get("normalized") or best.get("text") or "")
                    ok = read is not None and normalize_plate(read) == normalize_plate(truth.text)
                    read_ok += ok
                    if not ok:
                        misses.append({"image": path.name, "truth": truth.text, "read": read})
                elif not hit:
                    misses.append({"image": path.name, "truth": truth.text, "read": None})
            if (index + 1) % 10 == 0 or index + 1 == len(items):
                say(f"  {index + 1}/{len(items)} images, recall so far {detected}/{n_plates}")
    images = len(items) - len(unreadable)
    notes = []
    if not chain.has_ocr:
        notes.append("no OCR stage in this topology: exact_match is null and misses list undetected plates only")
    if unreadable:
        notes.append(f"{len(unreadable)} image(s) could not be decoded and were skipped: {', '.join(unreadable[:5])}")
    return {
        "dataset": str(dataset),
        "images": images,
        "plates": n_plates,
        "exact_match": (read_ok / n_plates if n_plates else 0.0) if chain.has_ocr else None,
        "detection_recall": detected / n_plates if n_plates else 0.0,
        "ms_per_image": spent * 1000.0 / images if images else 0.0,
        "misses": misses,
        "detections_per_image": n_dets / images if images else 0.0,
        "stages": chain.types,
        "notes": "; ".join(notes),
    }


def main_text(result: dict[str, Any]) -> str:
    """A human summary of :func:`run`'s result."""
    em = result.get("exact_match")
    lines = [
        f"dataset {result['dataset']}: {result['images']} images, {result['plates']} plates "
        f"({', '.join(result.get('stages', []))})",
        f"  detection recall (IoU > {IOU_MIN}): {result['detection_recall']:.3f}",
        f"  exact match: {'n/a' if em is None else f'{em:.3f}'}",
        f"  {result['ms_per_image']:.1f} ms per image, {result.get('detections_per_image', 0):.2f} plate detections per image",
    ]
    if result["misses"]:
        lines.append(f"  misses ({len(result['misses'])}):")
        for m in result["misses"][:20]:
            lines.append(f"    {m['image']}: {m['truth']!r} read {m['read']!r}")
        if len(result["misses"]) > 20:
            lines.append(f"    ... {len(result['misses']) - 20} more")
    if result.get("notes"):
        lines.append(f"  note: {result['notes']}")
    return "\n".join(lines)
