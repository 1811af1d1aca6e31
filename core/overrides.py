"""Topologies changed on the way in: ``up --input`` and the benchmarks' overrides.

The change is made on the YAML data and the result goes through the ordinary loader, so a changed
topology is checked exactly like a written one (types, parameters, graph). Problems are reported
against the original file; a line number may then point at the stage the change touched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import yaml

from .topology import Problem, Topology, TopologyError, parse

Data = dict[str, Any]


def load_changed(path: str, change: Callable[[Data], None], host: str | None = None) -> Topology:
    """Load ``path`` after ``change`` edited its YAML data in place."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TopologyError([Problem(path, 1, f"cannot read the file ({exc.strerror}), "
                                              "expected a readable topology YAML file")]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return parse(text, path, host=host)  # the loader reports the YAML error with its line
    if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
        return parse(text, path, host=host)
    change(data)
    return parse(yaml.safe_dump(data, sort_keys=False), path, host=host)


def stages_of_type(data: Data, prefix: str) -> list[str]:
    """Names of the stages whose type starts with ``prefix`` (``"source."``, ``"dedup.plates"``)."""
    return [name for name, decl in data["stages"].items()
            if isinstance(decl, dict) and str(decl.get("type", "")).startswith(prefix)]


def set_params(data: Data, stage: str, **params: Any) -> None:
    """Set parameters of one stage (added to those the file gives)."""
    decl = data["stages"][stage]
    decl["params"] = {**(decl.get("params") or {}), **params}


def source_stage(data: Data) -> str:
    """The topology's one source stage (no inputs); an error naming them when there are several."""
    sources = [name for name, decl in data["stages"].items() if isinstance(decl, dict) and not decl.get("inputs")]
    if len(sources) != 1:
        raise ValueError(f"--input replaces the topology's source stage, but it has {len(sources)} "
                         f"({', '.join(sources) or 'none'}); edit the topology instead")
    return sources[0]


def use_input(data: Data, uri: str) -> None:
    """Replace the source stage by a reader of ``uri``: a folder of images, a video file, a
    stream URL (rtsp://, http://) or a device number. The stage keeps its name and camera id.

    Files are read as fast as the graph takes them (every frame processed, nothing dropped);
    streams are live (latest frame wins, reconnect).
    """
    name = source_stage(data)
    old = data["stages"][name]
    camera_id = (old.get("params") or {}).get("camera_id") or name
    if os.path.isdir(uri):
        new: Data = {"type": "source.images", "params": {"path": uri, "camera_id": camera_id}}
    elif "://" in uri or uri.isdigit():
        new = {"type": "source.video", "params": {"url": int(uri) if uri.isdigit() else uri, "camera_id": camera_id}}
    elif os.path.isfile(uri):
        new = {"type": "source.video", "params": {"url": uri, "camera_id": camera_id, "realtime": False}}
    else:
        raise ValueError(f"--input {uri}: no such file or folder (expected a video file, a folder of images, "
                         "an rtsp:// or http:// URL, or a camera device number)")
    for key in ("replicas", "host"):
        if key in old:
            new[key] = old[key]
    data["stages"][name] = new
