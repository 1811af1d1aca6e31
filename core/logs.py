"""Per-stage log files: how workers write them, and how ``alpr-topo logs`` and the status page read them.

Each stage replica appends to ``<run>/logs/<stage>.<replica>.log`` (the supervisor to
``supervisor.log``). Lines are text by default, or JSON objects with ``up --log-format json`` (for
a log shipper). Either way a line written while a stage handles an envelope carries the frame it
was about (camera and frame id) and, for plate events, the event id: the worker sets that context
around ``process`` (:func:`frame_context`), so a stage's own ``self.log`` calls get it for free.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterator

#: (camera_id, frame_id, event_id) of the envelope being processed, or None between envelopes.
_current: contextvars.ContextVar[tuple[str, int, str | None] | None] = contextvars.ContextVar("alpr_frame", default=None)


def frame_context(camera_id: str | None, frame_id: int | None = None, meta: dict[str, Any] | None = None) -> None:
    """Say which envelope the following log lines are about (``None`` for none)."""
    if camera_id is None:
        _current.set(None)
        return
    event = (meta or {}).get("event")
    event_id = event.get("event_id") if isinstance(event, dict) else None
    _current.set((camera_id, int(frame_id or 0), event_id))


class _ContextFilter(logging.Filter):
    """Puts the stage identity and the current frame on every record."""

    def __init__(self, stage: str, replica: int, instance: str) -> None:
        super().__init__()
        self.stage, self.replica, self.instance = stage, replica, instance

    def filter(self, record: logging.LogRecord) -> bool:
        record.stage, record.replica, record.instance = self.stage, self.replica, self.instance
        current = _current.get()
        record.camera_id, record.frame_id, record.event_id = current if current else (None, None, None)
        return True


class TextFormatter(logging.Formatter):
    """``TIME LEVEL [stage.replica] message (frame CAM/ID, event UUID)``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s [%(stage)s.%(replica)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        where = []
        if getattr(record, "camera_id", None) is not None:
            where.append(f"frame {record.camera_id}/{record.frame_id}")
        if getattr(record, "event_id", None):
            where.append(f"event {record.event_id}")
        if where:
            first, nl, rest = text.partition("\n")  # keep a traceback below the context
            text = f"{first} ({', '.join(where)}){nl}{rest}"
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, stage, replica, instance, logger, msg, camera_id,
    frame_id, event_id (when set), exc (a traceback, when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "stage": getattr(record, "stage", None),
            "replica": getattr(record, "replica", None),
            "instance": getattr(record, "instance", None),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("camera_id", "frame_id", "event_id"):
            if getattr(record, key, None) is not None:
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_worker_logging(spec: dict[str, Any]) -> None:
    """INFO and up to the stage's log file (text or JSON), WARNING and up (or the console level)
    to standard error as text."""
    context = _ContextFilter(spec["stage"], int(spec["replica"]), spec.get("instance", ""))
    handlers: list[logging.Handler] = []
    if spec.get("log_file"):
        file_handler = logging.FileHandler(spec["log_file"])
        file_handler.setFormatter(JsonFormatter() if spec.get("log_format") == "json" else TextFormatter())
        handlers.append(file_handler)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(spec.get("console_level", "WARNING"))
    console.setFormatter(TextFormatter())
    handlers.append(console)
    for handler in handlers:
        handler.addFilter(context)
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)


# -- reading -------------------------------------------------------------------------------------


def log_files(folder: Path, stage: str) -> list[Path]:
    """The files of STAGE (one per replica, by replica), or ``supervisor.log`` for "supervisor"."""
    files = sorted(folder.glob(f"{stage}.*.log"), key=lambda p: _replica_of(p, stage))
    files = [p for p in files if _replica_of(p, stage) >= 0]
    if not files and stage == "supervisor" and (folder / "supervisor.log").exists():
        return [folder / "supervisor.log"]
    return files


def _replica_of(path: Path, stage: str) -> int:
    middle = path.name[len(stage) + 1:-len(".log")]
    return int(middle) if middle.isdigit() else -1


def stages_with_logs(folder: Path) -> list[str]:
    names = {p.name.rsplit(".", 2)[0] for p in folder.glob("*.*.log")}
    return sorted(names) + (["supervisor"] if (folder / "supervisor.log").exists() else [])


def as_text(line: str) -> str:
    """A JSON log line in the text layout; a text line as it is."""
    if not line.startswith("{"):
        return line
    try:
        rec = json.loads(line)
    except ValueError:
        return line
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec.get("ts", 0))) + f",{int(rec.get('ts', 0) * 1000) % 1000:03d}"
    text = f"{stamp} {rec.get('level')} [{rec.get('stage')}.{rec.get('replica')}] {rec.get('msg')}"
    where = [f"frame {rec['camera_id']}/{rec.get('frame_id')}"] if rec.get("camera_id") is not None else []
    where += [f"event {rec['event_id']}"] if rec.get("event_id") else []
    if where:
        text += f" ({', '.join(where)})"
    if rec.get("exc"):
        text += "\n" + rec["exc"]
    return text


def tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a file (reads from the end, so large logs cost little)."""
    if lines <= 0:
        return []
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        end = fh.tell()
        size, data = 0, b""
        while end - size > 0 and data.count(b"\n") <= lines:
            size = min(end, size + 65536)
            fh.seek(end - size)
            data = fh.read(size)
    return [line.decode("utf-8", "replace") for line in data.splitlines()[-lines:]]


def tail_many(paths: list[Path], lines: int, label: bool, text: bool = True) -> list[str]:
    """The last lines of several replicas' files, merged by time stamp where lines have one; JSON
    lines turned into text unless ``text`` is False; ``[stage.replica]`` before each with ``label``."""
    merged: list[tuple[str, int, str]] = []
    for index, path in enumerate(paths):
        key = ""
        for n, line in enumerate(tail(path, lines + 200)):  # more, so a traceback's head line is seen
            key = _sort_key(line) or key  # a traceback's lines sort with the line they belong to
            shown = as_text(line) if text else line
            merged.append((key, index * 10**9 + n, f"[{path.stem}] {shown}" if label else shown))
    merged.sort(key=lambda item: (item[0], item[1]))
    return [line for _, _, line in merged[-lines:]]


_STAMPED = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}")


def _sort_key(line: str) -> str:
    """A sortable time stamp of a log line, "" for a line without one (a traceback's)."""
    if line.startswith("{"):
        try:
            ts = float(json.loads(line).get("ts", 0))
        except (ValueError, TypeError, AttributeError):
            return ""
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) + f",{int(ts * 1000) % 1000:03d}"
    return line[:23] if _STAMPED.match(line) else ""


def follow(paths: list[Path], poll_s: float = 0.25) -> Iterator[tuple[Path, str]]:
    """Lines appended to the files from now on (``tail -f``), forever. "Now" is this call, not the
    first ``next``: nothing written in between is missed."""
    offsets = {p: p.stat().st_size if p.exists() else 0 for p in paths}
    return _follow(paths, offsets, poll_s)


def _follow(paths: list[Path], offsets: dict[Path, int], poll_s: float) -> Iterator[tuple[Path, str]]:
    partial = {p: "" for p in paths}
    while True:
        got = False
        for path in paths:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size < offsets[path]:
                offsets[path] = 0  # truncated or replaced: start again from its beginning
            if size == offsets[path]:
                continue
            with open(path, "rb") as fh:
                fh.seek(offsets[path])
                data = fh.read(size - offsets[path])
            offsets[path] = size
            text = partial[path] + data.decode("utf-8", "replace")
            *complete, partial[path] = text.split("\n")
            for line in complete:
                got = True
                yield path, line
        if not got:
            time.sleep(poll_s)
