"""``alpr-topo models``: which model files a topology uses, and where to get them.

* :data:`REGISTRY`: models the project knows, by name: file name(s), the official download URL
  (release assets of open-image-models and fast-plate-ocr), sha256 where known.
* :func:`describe`: for each stage of a topology, the model files it reads, whether they exist,
  their size and sha256 and where they come from (a registry entry, or "embedded in
  rapidocr-onnxruntime <version>" for the default plate detector).
* :func:`pull`: download a registry model into a folder with ``urllib``, checking its sha256,
  written atomically (a partial download never looks like a model).
* :func:`build_engine`: the TensorRT engine of an ONNX model for this GPU
  (``alpr-topo models build-engine MODEL``).

docs/models.md explains all of it for users.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

__all__ = [
    "KnownModel", "ModelFile", "REGISTRY", "ChecksumError", "build_engine", "describe", "find_known",
    "main_text", "missing_model_hint", "pull", "sha256_file",
]

OIM = "https://github.com/ankandrew/open-image-models/releases/download/assets"
FPO = "https://github.com/ankandrew/cnn-ocr-lp/releases/download/arg-plates"
FAST_ALPR_RS = ("https://raw.githubusercontent.com/agusibrahim/fast-alpr-rs/"
                "9a4e03d2f2f26a041e05752bed5668ee7ebc1e64/models")


@dataclass(frozen=True)
class ModelFile:
    """One file of a model: the name it gets locally, where it is downloaded from, its sha256."""

    file: str
    url: str
    sha256: str | None = None


@dataclass(frozen=True)
class KnownModel:
    name: str
    what: str
    files: tuple[ModelFile, ...]
    source: str
    #: How sure we are of the URL and checksum (shown by ``alpr-topo models``).
    provenance: str = ""
    aliases: tuple[str, ...] = field(default=())

    @property
    def file(self) -> str:
        """The main file (the network); others are configs next to it."""
        return self.files[0].file


def _oim(size: str, variant: str = "t") -> KnownModel:
    asset = f"yolo-v9-{variant}-{size}-license-plates-end2end.onnx"
    sha = {"384": "888397b96d761c89db40bc9c305838e8652660f5e282c2cadebbe8d2951a77a8"}.get(size) if variant == "t" else None
    return KnownModel(
        name=f"plate-detector-yolov9{variant}-{size}",
        what=f"license-plate detector, YOLOv9-{variant} {size}x{size}, end-to-end (NMS inside), float32",
        files=(ModelFile(f"plate-detector-yolov9{variant}-{size}.onnx", f"{OIM}/{asset}", sha),),
        source="ankandrew/open-image-models release asset (MIT)",
        provenance=("asset name from open-image-models' own model hub (open_image_models/detection/core/hub.py)"
                    + ("; sha256 from a third-party manifest that pins this asset, not checked here" if sha else
                       "; sha256 not known: the download is not checked")),
        aliases=(f"yolo-v9-{variant}-{size}-license-plate-end2end", asset),
    )


REGISTRY: dict[str, KnownModel] = {m.name: m for m in [
    KnownModel(
        name="plate-detector-yolov9t-416-int8",
        what="license-plate detector, YOLOv9-t 416x416, end-to-end (NMS inside), dynamically int8-quantised "
             "(the model of the tests and benchmarks, ../shared/models)",
        files=(ModelFile("plate-detector-yolov9t-416-int8.onnx",
                         f"{FAST_ALPR_RS}/yolo-v9-t-416-license-plates-end2end1.onnx",
                         "5a5eac89c5736f6e0d94ef2422defc8a1eed828b6ad1124d0128df4d47fc2b65"),),
        source="weights of ankandrew/open-image-models (MIT); quantised copy in agusibrahim/fast-alpr-rs @ 9a4e03d",
        provenance="sha256 of the shared test fixture; URL best-known (the raw file of that commit), not fetched here",
        aliases=("yolo-v9-t-416-license-plates-end2end1.onnx",),
    ),
    _oim("416"), _oim("256"), _oim("384"), _oim("512"), _oim("640"), _oim("608", "s"),
    KnownModel(
        name="plate-ocr-cct-xs-v2-global",
        what="plate-crop OCR, fast-plate-ocr CCT-XS v2 global (65+ regions), 64x128 RGB uint8 in, "
             "10 character slots x 37 symbols out, with its YAML config",
        files=(ModelFile("plate-ocr-cct-xs-v2-global.onnx", f"{FPO}/cct_xs_v2_global.onnx",
                         "8031afb5fdc6b4d80462c9d542f1284ebd2cfddf5dbacd62609848d7e2855f44"),
               ModelFile("plate-ocr-cct-xs-v2-global.yaml", f"{FPO}/cct_xs_v2_global_plate_config.yaml",
                         "0335c74a305173bb6f393efed0fde03cadeaa0b649ed8e19f431016d8232d0a6")),
        source="ankandrew/fast-plate-ocr release asset (MIT)",
        provenance="sha256 of both files equal the shared test fixtures; asset names as referenced by "
                   "fast-plate-ocr users (cnn-ocr-lp releases, tag arg-plates)",
        aliases=("cct-xs-v2-global-model", "cct_xs_v2_global.onnx"),
    ),
    KnownModel(
        name="plate-ocr-cct-s-v2-global",
        what="plate-crop OCR, fast-plate-ocr CCT-S v2 global (larger, more accurate), with its YAML config",
        files=(ModelFile("plate-ocr-cct-s-v2-global.onnx", f"{FPO}/cct_s_v2_global.onnx"),
               ModelFile("plate-ocr-cct-s-v2-global.yaml", f"{FPO}/cct_s_v2_global_plate_config.yaml")),
        source="ankandrew/fast-plate-ocr release asset (MIT)",
        provenance="best-known asset names (same release as CCT-XS v2); sha256 not known: the download is not checked",
        aliases=("cct-s-v2-global-model", "cct_s_v2_global.onnx"),
    ),
]}


def find_known(name_or_file: str) -> KnownModel | None:
    """A registry entry by name, alias or (base)name of one of its files."""
    key = os.path.basename(str(name_or_file))
    if key in REGISTRY:
        return REGISTRY[key]
    for model in REGISTRY.values():
        if key in model.aliases or any(f.file == key for f in model.files):
            return model
    return None


def missing_model_hint(path: str) -> str:
    """What to tell a user whose model file is missing."""
    known = find_known(path)
    folder = os.path.dirname(path) or "."
    if known is not None:
        return (f"run `alpr-topo models pull {known.name} --dest {folder}` or put the file there; "
                "see docs/models.md")
    return ("put the model file there (a YOLO .onnx export; `alpr-topo models pull NAME` downloads the known ones, "
            "`alpr-topo models list` names them); see docs/models.md")


# -- files ------------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


class ChecksumError(ValueError):
    """A downloaded file is not the expected one."""


def pull(model: str | KnownModel, dest: str | os.PathLike[str] = "models", *, force: bool = False,
         timeout: float = 60.0, progress: Callable[[str], None] | None = None) -> list[Path]:
    """Download ``model`` (a registry name or alias, or a :class:`KnownModel`) into ``dest``.

    Files already there with the right checksum are kept (``force`` downloads again). Each file
    is streamed to a temporary file in ``dest``, its sha256 checked when known, then renamed into
    place, so an interrupted or corrupt download never leaves a file under the final name.
    Returns the paths of the model's files.
    """
    entry = model if isinstance(model, KnownModel) else find_known(model)
    if entry is None:
        raise KeyError(f"unknown model {model!r}; known: {', '.join(REGISTRY)}")
    folder = Path(dest)
    folder.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda msg: None)
    paths = []
    for item in entry.files:
        target = folder / item.file
        if target.is_file() and not force and (item.sha256 is None or sha256_file(target) == item.sha256):
            say(f"{target} is already there")
            paths.append(target)
            continue
        say(f"downloading {item.url} -> {target}")
        fd, tmp = tempfile.mkstemp(prefix=f".{item.file}.", suffix=".part", dir=folder)
        try:
            h = hashlib.sha256()
            size = 0
            request = urllib.request.Request(item.url, headers={"User-Agent": "alpr-topo"})
            with urllib.request.urlopen(request, timeout=timeout) as response, os.fdopen(fd, "wb") as out:
                status = getattr(response, "status", 200)
                if status != 200:
                    raise OSError(f"{item.url} answered HTTP {status}")
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    h.update(block)
                    size += len(block)
            digest = h.hexdigest()
            if item.sha256 and digest != item.sha256:
                raise ChecksumError(f"{item.url}: sha256 {digest} is not the expected {item.sha256}; "
                                    "the file was not kept")
            os.replace(tmp, target)
            say(f"{target}: {size} bytes, sha256 {digest}" + ("" if item.sha256 else " (no known checksum to check)"))
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        paths.append(target)
    return paths


# -- what a topology uses ---------------------------------------------------------------------


def _file_info(path: str, checksum: bool = True) -> dict[str, Any]:
    p = Path(path)
    info: dict[str, Any] = {"path": str(path), "exists": p.is_file(), "bytes": None, "sha256": None}
    if p.is_file():
        info["bytes"] = p.stat().st_size
        if checksum:
            info["sha256"] = sha256_file(p)
    return info


def _source(path: str, sha: str | None) -> tuple[str, str | None, bool | None]:
    """(where it comes from, registry name, checksum matches the registry)."""
    known = find_known(path)
    if known is None and sha:
        known = next((m for m in REGISTRY.values() if any(f.sha256 == sha for f in m.files)), None)
    if known is None:
        return "user-provided (not in the registry)", None, None
    item = next((f for f in known.files if f.file == os.path.basename(path)), known.files[0])
    ok = None if (item.sha256 is None or sha is None) else sha == item.sha256
    return f"{known.source}: `alpr-topo models pull {known.name}` ({item.url})", known.name, ok


def describe(topology: Any, checksum: bool = True) -> list[dict[str, Any]]:
    """For each stage of ``topology`` (a topology file, or a loaded
    :class:`~alpr_topo.core.topology.Topology`), the model files it uses; missing files are
    listed too (the file is loaded without the model-file check of validation).

    One dict per (stage, file): ``stage``, ``type``, ``param``, ``path``, ``exists``, ``bytes``,
    ``sha256``, ``source``, ``known`` (registry name or None), ``checksum_ok`` (None if unknown).
    Stages without a model are left out.
    """
    from ..core.topology import Topology, load
    from ..stages.detect import model_file_checks

    if isinstance(topology, Topology):
        topo = topology
    else:
        with model_file_checks(False):  # a missing model is what this is asked to show
            topo = load(str(topology))
    rows: list[dict[str, Any]] = []
    for decl in topo.stages.values():
        for param, path, source in _stage_models(decl.type, decl.params):
            info = _file_info(path, checksum)
            if source is None:
                source, known, ok = _source(path, info["sha256"])
            else:
                known, ok = None, None
            rows.append({"stage": decl.name, "type": decl.type, "param": param, **info,
                         "source": source, "known": known, "checksum_ok": ok})
    return rows


def _stage_models(type_name: str, params: dict[str, Any]) -> Iterable[tuple[str, str, str | None]]:
    """(param, path, source or None to look it up) for every model file a stage reads."""
    if type_name == "detect.plates":
        from ..stages.det_ppocr import DET_MODEL_NAME, REC_MODEL_NAME, embedded_model, rapidocr_version

        embedded = f"embedded in rapidocr-onnxruntime {rapidocr_version() or '(not installed)'}"
        for param, name, used in (("det_model", DET_MODEL_NAME, True),
                                  ("rec_model", REC_MODEL_NAME, params.get("verify", True))):
            if not used:
                continue
            if params.get(param):
                yield param, str(params[param]), None
            else:
                try:
                    yield param, str(embedded_model(name)), embedded
                except FileNotFoundError as exc:
                    yield param, name, f"{embedded}: {exc}"
        return
    for key, value in params.items():
        if isinstance(value, str) and value and (key == "model" or key.endswith("_model") or key in ("engine", "config")):
            yield key, value, None


def main_text(rows: list[dict[str, Any]]) -> str:
    """The table ``alpr-topo models TOPOLOGY`` prints."""
    if not rows:
        return "no stage of this topology reads a model file"
    lines = []
    for r in rows:
        size = f"{r['bytes'] / 1e6:.1f} MB" if r["bytes"] else "-"
        state = "ok" if r["exists"] else "MISSING"
        if r["exists"] and r.get("checksum_ok") is False:
            state = "CHECKSUM DIFFERS"
        lines.append(f"{r['stage']} ({r['type']}) {r['param']}: {r['path']}  [{state}, {size}]")
        if r["sha256"]:
            lines.append(f"    sha256 {r['sha256']}")
        lines.append(f"    from {r['source']}")
        if not r["exists"]:
            lines.append(f"    {missing_model_hint(r['path'])}")
    return "\n".join(lines)


def list_text() -> str:
    """The known models, for ``alpr-topo models list``."""
    out = []
    for m in REGISTRY.values():
        out.append(f"{m.name}: {m.what}")
        for f in m.files:
            out.append(f"    {f.file} <- {f.url}" + (f"  sha256 {f.sha256[:16]}..." if f.sha256 else ""))
        out.append(f"    source: {m.source}; {m.provenance}")
    return "\n".join(out)


def build_engine(model: str, *, fp16: bool = True, max_batch: int = 8, input_size: int | None = None,
                 force: bool = False) -> Path:
    """``alpr-topo models build-engine MODEL``: build the TensorRT engine beside ``model``.

    Raises :class:`~alpr_topo.stages.det_tensorrt.TensorRTUnavailable` saying what is missing
    on a machine without TensorRT, cuda-python or a GPU.
    """
    from ..stages.det_tensorrt import build_engine as _build

    return _build(model, fp16=fp16, max_batch=max_batch, input_size=input_size, force=force)
