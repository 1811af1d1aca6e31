"""Plate-crop readers behind one interface: ``read(crops) -> list[Read]``, batched.

- :class:`FastPlateReader`: a fast-plate-ocr ONNX model (fixed character slots, one softmax per
  slot, optionally a ``region`` head). The accurate reader when a model is configured.
- :class:`PPOCRReader`: PP-OCR's text-line recogniser from ``rapidocr-onnxruntime`` (CTC over
  6,600 characters, restricted here to the ones plates use). The offline default: no model
  file to fetch.
- :class:`PaddleReader` (in :mod:`.ocr_paddle`): the same recogniser on Paddle's runtime, when
  ``alpr-topo[paddle]`` is installed.
- :class:`CombinedReader`: two readers, combined per character (see its doc).

Every :class:`Read` carries, besides its text, a per-position score table
(:class:`~alpr_topo.stages.regions.SlotScorer`) when the reader has one, so region correction
can price every alternative character instead of guessing from look-alike pairs.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import yaml

from .ocr_doubles import collapsed_double
from .ocr_prep import CharRow, row_line, stretch_gray, strip_bands
from .regions import CTCScorer, RegionSet, Scorer, SlotScorer, ctc_runs, normalize

log = logging.getLogger("alpr_topo.ocr")

__all__ = [
    "CombinedReader", "FastPlateConfig", "FastPlateReader", "PPOCRReader", "Read", "Reader",
    "embedded_rec_model", "make_session",
]

PLATE_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
MODELS_HOWTO = ("get it from the fast-plate-ocr release assets (github.com/ankandrew/fast-plate-ocr, "
                "e.g. cct-xs-v2-global-model: the .onnx and its _config.yaml; `alpr-topo models pull plate-ocr-cct-xs-v2-global`), see docs/models.md")


@dataclass
class Read:
    """One crop's read."""

    text: str  # the reader's best text, upper-case letters and digits
    char_confidences: list[float]  # one per character of ``text``, 0..1
    confidence: float  # 0..1 for the whole text
    reader: str = ""
    scorer: Scorer | None = field(default=None, repr=False)  # prices region formats, see regions.py
    countries: dict[str, float] | None = None  # region head: country name -> probability
    #: per character of ``text``: log-probabilities over ``char_alphabet`` (for combining readers)
    char_logp: np.ndarray | None = field(default=None, repr=False)
    char_alphabet: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def min_confidence(self) -> float:
        return min(self.char_confidences) if self.char_confidences else 0.0


class Reader:
    """What every reader implements."""

    name: str = "reader"

    def read(self, crops: Sequence[np.ndarray]) -> list[Read]:
        """BGR ``uint8`` crops (any size) -> one :class:`Read` per crop, in order."""
        raise NotImplementedError

    def close(self) -> None:
        """Free sessions (optional)."""


def make_session(model: str | os.PathLike[str], threads: int = 2) -> Any:
    """An onnxruntime CPU session: ``threads`` intra-op threads, one inter-op thread, no spinning
    (a spinning pool burns the cores other stages need while it waits)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(threads))
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])


def _geo_mean(values: Sequence[float]) -> float:
    if not values:
        return 0.0
    return float(math.exp(sum(math.log(max(v, 1e-6)) for v in values) / len(values)))


# -- fast-plate-ocr ---------------------------------------------------------------------------------


@dataclass
class FastPlateConfig:
    """The model's YAML config (fast-plate-ocr's ``*_config.yaml``); defaults are CCT v2's."""

    max_plate_slots: int = 10
    alphabet: str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_"
    pad_char: str = "_"
    img_height: int = 64
    img_width: int = 128
    keep_aspect_ratio: bool = False
    interpolation: str = "linear"
    image_color_mode: str = "rgb"
    padding_color: tuple[int, int, int] = (114, 114, 114)
    plate_regions: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "FastPlateConfig":
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of config keys")
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        if "padding_color" in values and values["padding_color"] is not None:
            pc = values["padding_color"]
            values["padding_color"] = tuple(int(v) for v in (pc if isinstance(pc, (list, tuple)) else [pc] * 3))
        cfg = cls(**values)
        cfg.alphabet = str(cfg.alphabet)
        if cfg.pad_char not in cfg.alphabet:
            raise ValueError(f"{path}: pad_char {cfg.pad_char!r} is not in the alphabet")
        if cfg.image_color_mode not in ("rgb", "grayscale"):
            raise ValueError(f"{path}: image_color_mode must be rgb or grayscale, got {cfg.image_color_mode!r}")
        return cfg


def find_config(model: Path) -> Path | None:
    """The YAML beside a model: ``NAME.yaml``, ``NAME.yml``, ``NAME_config.yaml``, ``config.yaml``."""
    stem = model.with_suffix("")
    for cand in (stem.with_suffix(".yaml"), stem.with_suffix(".yml"), Path(f"{stem}_config.yaml"),
                 model.parent / "config.yaml"):
        if cand.is_file():
            return cand
    return None


_INTERP = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR, "bilinear": cv2.INTER_LINEAR,
           "cubic": cv2.INTER_CUBIC, "bicubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA, "lanczos4": cv2.INTER_LANCZOS4}


class FastPlateReader(Reader):
    """A fast-plate-ocr ONNX model: uint8 ``[N, H, W, C]`` in, ``plate`` ``[N, slots, alphabet]``
    out (softmax per slot), and ``region`` ``[N, regions]`` when the model has that head."""

    name = "fast-plate-ocr"

    def __init__(self, model: str | os.PathLike[str], config: str | os.PathLike[str] | None = None,
                 threads: int = 2) -> None:
        path = Path(model).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"fast-plate-ocr model {str(path)!r} not found: {MODELS_HOWTO}")
        cfg_path = Path(config).expanduser() if config else find_config(path)
        self.config = FastPlateConfig.load(cfg_path) if cfg_path else FastPlateConfig()
        self.config_path = cfg_path
        self.model = str(path)
        self.session = make_session(path, threads)
        self.input_name = self.session.get_inputs()[0].name
        outs = [o.name for o in self.session.get_outputs()]
        self.plate_output = "plate" if "plate" in outs else outs[0]
        self.region_output = "region" if "region" in outs else None
        shape = self.session.get_outputs()[outs.index(self.plate_output)].shape
        if isinstance(shape[-1], int) and shape[-1] != len(self.config.alphabet):
            raise ValueError(f"{self.model}: the model scores {shape[-1]} characters but its config "
                             f"({cfg_path or 'defaults'}) has an alphabet of {len(self.config.alphabet)}")
        in_shape = self.session.get_inputs()[0].shape
        if isinstance(in_shape[1], int) and isinstance(in_shape[2], int):
            self.config.img_height, self.config.img_width = int(in_shape[1]), int(in_shape[2])
        self.pad = self.config.alphabet.index(self.config.pad_char)
        self.interp = _INTERP.get(str(self.config.interpolation).lower(), cv2.INTER_LINEAR)

    def prepare(self, crop: np.ndarray) -> np.ndarray:
        cfg = self.config
        h, w = crop.shape[:2]
        gray = cfg.image_color_mode == "grayscale"
        img = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if gray else cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
        if cfg.keep_aspect_ratio:
            scale = min(cfg.img_width / w, cfg.img_height / h)
            nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
            small = cv2.resize(img, (nw, nh), interpolation=self.interp)
            fill = cfg.padding_color[0] if gray else cfg.padding_color
            out = np.full((cfg.img_height, cfg.img_width) + (() if gray else (3,)), fill, np.uint8)
            y, x = (cfg.img_height - nh) // 2, (cfg.img_width - nw) // 2
            out[y:y + nh, x:x + nw] = small
        else:
            out = cv2.resize(img, (cfg.img_width, cfg.img_height), interpolation=self.interp)
        return out[..., None] if gray else out

    def raw(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """Slot probabilities ``[N, slots, alphabet]`` and region probabilities (or None)."""
        batch = np.stack([self.prepare(c) for c in crops])
        names = [self.plate_output] + ([self.region_output] if self.region_output else [])
        outs = self.session.run(names, {self.input_name: batch})
        probs = outs[0].astype(np.float64)
        if probs.ndim == 2:  # flattened [N, slots * alphabet]
            probs = probs.reshape(len(crops), -1, len(self.config.alphabet))
        if not np.allclose(probs.sum(-1), 1.0, atol=1e-2):  # logits: softmax them
            probs = np.exp(probs - probs.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
        regions = outs[1].astype(np.float64) if len(outs) > 1 else None
        return probs, regions

    def decode(self, probs: np.ndarray, regions: np.ndarray | None = None) -> Read:
        alphabet = self.config.alphabet
        logp = np.log(np.maximum(probs, 1e-9))
        best = probs.argmax(-1)
        chars, confs = [], []
        for slot, k in enumerate(best):
            if k == self.pad:
                continue  # fast-plate-ocr drops pads wherever they are
            chars.append(alphabet[k])
            confs.append(float(probs[slot, k]))
        # the whole read: every slot, pads included (a doubtful pad is a doubtful length)
        confidence = _geo_mean([float(p) for p in probs.max(-1)]) * (min(confs) if confs else 0.0) ** 0.25
        countries = None
        names = self.config.plate_regions
        if regions is not None and names and len(names) == regions.shape[-1]:
            order = np.argsort(-regions)[:5]
            countries = {names[i]: float(regions[i]) for i in order}
        scorer = SlotScorer(logp, alphabet, pad=self.pad)
        rows = [slot for slot, k in enumerate(best) if k != self.pad]
        keep = [i for i, c in enumerate(alphabet) if i != self.pad]
        char_logp = logp[rows][:, keep] if rows else np.zeros((0, len(keep)))
        if rows:
            char_logp = char_logp - np.logaddexp.reduce(char_logp, axis=1, keepdims=True)
        return Read("".join(chars), confs, float(confidence), self.name, scorer=scorer, countries=countries,
                    char_logp=char_logp, char_alphabet="".join(alphabet[i] for i in keep))

    def read(self, crops: Sequence[np.ndarray]) -> list[Read]:
        if not crops:
            return []
        probs, regions = self.raw(crops)
        return [self.decode(probs[i], regions[i] if regions is not None else None) for i in range(len(crops))]


# -- PP-OCR ------------------------------------------------------------------------------------------


def embedded_rec_model() -> Path:
    """PP-OCRv4's recogniser as shipped inside ``rapidocr-onnxruntime``."""
    try:
        import rapidocr_onnxruntime
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise RuntimeError("rapidocr-onnxruntime is not installed: pip install rapidocr-onnxruntime") from exc
    path = Path(rapidocr_onnxruntime.__file__).resolve().parent / "models" / "ch_PP-OCRv4_rec_infer.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the rapidocr-onnxruntime package")
    return path


class PPOCRReader(Reader):
    """PP-OCR's CTC recogniser on the plate crop (no text detector: the box is known).

    Decoding is restricted to the characters plates carry (A-Z, 0-9 and separators, which are
    then dropped), so a plate never reads as Chinese or lower-case. Each character keeps the score
    distribution of the frame where it peaked, renormalised over A-Z and 0-9: the per-position
    table region correction uses.
    """

    name = "ppocr"
    HEIGHT = 48
    #: Horizontal stretch of the line before recognition. The CTC head sees one time step per 8
    #: pixels of width; plate characters are narrow and tightly spaced, so at the plate's own
    #: aspect two equal letters ("JJ") can fall into too few steps to keep the blank between
    #: them and collapse into one. A third more width gives them room (docs/ocr.md).
    WIDEN = 1.35
    SEPARATORS = " -.·"

    def __init__(self, model: str | os.PathLike[str] | None = None, threads: int = 2, max_width: int = 480,
                 line: bool = True, line_margin: float = 0.1, stretch: bool = True) -> None:
        self.model = str(model or embedded_rec_model())
        session = make_session(self.model, threads)
        meta = session.get_modelmeta().custom_metadata_map or {}
        chars = meta.get("character", "").splitlines()
        if not chars:
            raise ValueError(f"{self.model} carries no character list in its metadata")
        self._configure(session, session.get_inputs()[0].name, ["", *chars, " "], max_width, line, line_margin, stretch)

    def _configure(self, session: Any, input_name: str, charset: list[str], max_width: int, line: bool,
                   line_margin: float, stretch: bool) -> None:
        """What every runtime of the recogniser shares. ``charset``: the class of each output
        column (CTC blank first; PaddleOCR appends the space); ``session.run`` as onnxruntime's."""
        self.session = session
        self.input_name = input_name
        self.line = line
        self.stretch = stretch
        self.line_margin = line_margin
        self.min_width = 320
        self.max_width = max_width
        self.plate_cols = [i for i, c in enumerate(charset) if len(c) == 1 and c in PLATE_CHARS]
        sep_cols = [i for i, c in enumerate(charset) if len(c) == 1 and c in self.SEPARATORS]
        self.cols = np.array([0] + self.plate_cols + sep_cols)
        self.n_plate = len(self.plate_cols)
        self.alphabet = "".join(charset[i] for i in self.plate_cols)

    def prepare(self, crop: np.ndarray) -> np.ndarray:
        if self.stretch:
            crop = stretch_gray(crop)
        if crop.ndim == 2:
            crop = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
        h, w = crop.shape[:2]
        nw = int(min(self.max_width, max(16, round(w * self.WIDEN * self.HEIGHT / max(h, 1)))))
        img = cv2.resize(crop, (nw, self.HEIGHT), interpolation=cv2.INTER_LINEAR if h < self.HEIGHT else cv2.INTER_AREA)
        return (img.astype(np.float32) * (2.0 / 255.0) - 1.0).transpose(2, 0, 1)

    def read(self, crops: Sequence[np.ndarray]) -> list[Read]:
        if not crops:
            return []
        # a text-line recogniser reads every letter it sees: not the European bands' country codes
        crops = [strip_bands(c) for c in crops]
        # give it the plate's character row (and keep the row's blobs)
        found = [row_line(c, self.line_margin) if self.line else None for c in crops]
        lines = [f[0] if f is not None else c for f, c in zip(found, crops)]
        prepared = [self.prepare(c) for c in lines]
        # PaddleOCR pads every line to at least 320 px (its training shape 48 x 320): so do we,
        # a line's read must not depend on what else is in the batch
        width = max(self.min_width, max(p.shape[2] for p in prepared))
        batch = np.zeros((len(prepared), 3, self.HEIGHT, width), np.float32)
        for i, p in enumerate(prepared):
            batch[i, :, :, :p.shape[2]] = p
        out = self.session.run(None, {self.input_name: batch})[0]
        reads = []
        for i, p in enumerate(prepared):
            table = self._table(out[i][: max(1, int(math.ceil(p.shape[2] / 8)))])
            doubled = None
            if found[i] is not None:
                table, doubled = self._restore_double(table, found[i][1], lines[i], 8.0 * lines[i].shape[1] / p.shape[2])
            read = self.decode(table)
            if doubled:
                read.extra["doubled"] = doubled
            reads.append(read)
        return reads

    def _restore_double(self, table: np.ndarray, row: CharRow, line: np.ndarray,
                        frame_px: float) -> tuple[np.ndarray, str | None]:
        """The table with a collapsed doubled character emitted twice (a blank frame and a copy
        of its most confident frame after its run), when the row's blobs show one (see
        :mod:`alpr_topo.stages.ocr_doubles`)."""
        labels = table.argmax(1)
        j = collapsed_double(labels, row, line, frame_px)
        if j is None:
            return table, None
        k, t0, t1 = ctc_runs(labels)[j]
        peak = t0 + int(np.argmax(table[t0:t1 + 1, k]))
        blank = np.zeros_like(table[:1])
        blank[0, 0] = 1.0
        return np.concatenate([table[:t1 + 1], blank, table[peak:peak + 1], table[t1 + 1:]]), self.alphabet[k - 1]

    def _table(self, frames: np.ndarray) -> np.ndarray:
        """Per frame of the model's output: blank (separators merged into it), then the plate
        characters, summing to 1."""
        sub = frames[:, self.cols].astype(np.float64)  # blank, plate characters, separators
        sub = sub / np.maximum(sub.sum(1, keepdims=True), 1e-12)  # drop what went to other scripts
        n = self.n_plate
        # separators count as blanks: "ABC-123" and "ABC123" are one plate
        return np.concatenate([sub[:, :1] + sub[:, n + 1:].sum(1, keepdims=True), sub[:, 1:n + 1]], axis=1)

    def decode(self, table: np.ndarray) -> Read:
        """A :meth:`_table` into a read: each character keeps the distribution of its most
        confident frame."""
        logp = np.log(np.maximum(table, 1e-12))
        chars: list[str] = []
        confs: list[float] = []
        rows: list[np.ndarray] = []
        for k, t0, t1 in ctc_runs(table.argmax(1)):
            peak = t0 + int(np.argmax(table[t0:t1 + 1, k]))
            chars.append(self.alphabet[k - 1])
            confs.append(float(table[peak, k]))
            rows.append(table[peak, 1:])
        char_logp = None
        if rows:
            char_table = np.stack(rows)
            char_table = char_table / np.maximum(char_table.sum(1, keepdims=True), 1e-12)
            char_logp = np.log(np.maximum(char_table, 1e-12))
        return Read("".join(chars), confs, _geo_mean(confs), self.name, scorer=CTCScorer(logp, self.alphabet),
                    char_logp=char_logp, char_alphabet=self.alphabet)


# -- combination -------------------------------------------------------------------------------------


class CombinedReader(Reader):
    """Two readers on the same crops; their reads combined:

    - same length: per character, the character with the higher confidence (a character both
      readers agree on gets ``1 - (1 - a)(1 - b)``, a disputed one the winner's confidence minus
      the loser's);
    - different lengths: the read that validates for a configured region (``regions``); where
      both do, the more confident one; where neither does, the primary's. A line reader like
      PP-OCR reads a plate cut by the frame's edge as a confident fragment ("9" of "7NND019"),
      and a fragment fits no format; without ``regions``, the more confident one.

    ``primary`` wins ties. The combined read keeps the primary's score table where the text is
    the primary's own, so region correction still sees its alternatives.

    ``unsure_below`` < 1 reads a crop with the secondary only where the primary is unsure: one of
    its characters is below that confidence, or its text fits no region. The secondary is the
    slow one (PP-OCR: about 4x fast-plate-ocr's time), and the primary's confident reads are
    almost always right, so most of the gain costs a fraction of the time.
    """

    def __init__(self, primary: Reader, secondary: Reader, regions: RegionSet | None = None,
                 secondary_weight: float = 1.0, unsure_below: float = 1.0) -> None:
        self.primary = primary
        self.secondary = secondary
        self.regions = regions
        self.secondary_weight = secondary_weight
        self.unsure_below = unsure_below
        self.name = f"{primary.name}+{secondary.name}"

    def read(self, crops: Sequence[np.ndarray]) -> list[Read]:
        reads = self.primary.read(crops)
        unsure = [i for i, r in enumerate(reads) if self.unsure(r)]
        if unsure:
            second = self.secondary.read([crops[i] for i in unsure])
            for i, b in zip(unsure, second):
                reads[i] = self.combine(reads[i], b)
        return reads

    def unsure(self, read: Read) -> bool:
        """Whether the secondary should read this crop too."""
        if self.unsure_below >= 1 or not read.text or min(read.char_confidences, default=0.0) < self.unsure_below:
            return True
        return self.regions is not None and not self.regions.match(read.text)

    def combine(self, a: Read, b: Read) -> Read:
        ta = self._norm(a.text)
        tb = self._norm(b.text)
        if ta == tb:
            confs = [1 - (1 - p) * (1 - q) for p, q in zip(a.char_confidences, b.char_confidences)]
            return Read(a.text, confs, 1 - (1 - a.confidence) * (1 - b.confidence), self.name, scorer=a.scorer,
                        countries=a.countries, extra={"agree": True, "reads": [a.text, b.text]})
        if len(a.text) == len(b.text) and a.text and a.char_logp is not None and b.char_logp is not None:
            # both have per-character distributions: add log-probabilities (a product of experts)
            alphabet = "".join(c for c in a.char_alphabet if c in b.char_alphabet)
            ia = [a.char_alphabet.index(c) for c in alphabet]
            ib = [b.char_alphabet.index(c) for c in alphabet]
            joint = a.char_logp[:, ia] + self.secondary_weight * b.char_logp[:, ib]
            joint = joint - np.logaddexp.reduce(joint, axis=1, keepdims=True)
            best = joint.argmax(1)
            text = "".join(alphabet[k] for k in best)
            confs = [float(math.exp(joint[i, k])) for i, k in enumerate(best)]
            return Read(text, confs, _geo_mean(confs), self.name, scorer=SlotScorer(joint, alphabet),
                        countries=a.countries, char_logp=joint, char_alphabet=alphabet,
                        extra={"agree": False, "reads": [a.text, b.text], "how": "product"})
        if len(a.text) == len(b.text) and a.text:
            chars, confs = [], []
            for ca, pa, cb, pb in zip(a.text, a.char_confidences, b.text, b.char_confidences):
                if ca == cb:
                    chars.append(ca)
                    confs.append(1 - (1 - pa) * (1 - pb))
                elif pb * self.secondary_weight > pa:
                    chars.append(cb)
                    confs.append(max(0.0, pb - pa))
                else:
                    chars.append(ca)
                    confs.append(max(0.0, pa - pb))
            return Read("".join(chars), confs, _geo_mean(confs), self.name, countries=a.countries,
                        extra={"agree": False, "reads": [a.text, b.text], "how": "vote"})
        pick = a
        if self.regions is not None:
            va, vb = bool(self.regions.match(a.text)), bool(self.regions.match(b.text))
            if vb and not va:
                pick = b
            elif va and vb and b.confidence * self.secondary_weight > a.confidence:
                pick = b
        elif b.confidence * self.secondary_weight > a.confidence:
            pick = b
        return Read(pick.text, pick.char_confidences, pick.confidence, self.name, scorer=pick.scorer,
                    countries=a.countries, extra={"agree": False, "reads": [a.text, b.text], "how": "pick"})

    @staticmethod
    def _norm(text: str) -> str:
        return normalize(text)

    def close(self) -> None:
        self.primary.close()
        self.secondary.close()
