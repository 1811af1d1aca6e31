"""Append-only files rotated by date and size, with an fsync policy (used by ``publish.local``).

``RotatingFile("out/events-{date}.jsonl", max_bytes=...)`` writes to ``out/events-2024-05-01.jsonl``;
once a file would grow past ``max_bytes`` the next one is ``out/events-2024-05-01.1.jsonl``,
then ``.2``, ... A new date starts a new file. After a restart the newest file of the date is
continued, so nothing is overwritten.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import IO, Literal

__all__ = ["FsyncPolicy", "RotatingFile", "numbered", "write_atomic"]

FsyncPolicy = Literal["never", "interval", "always"]


def numbered(base: Path, index: int) -> Path:
    """``events.jsonl`` -> ``events.3.jsonl`` (index 0 is the base name itself)."""
    if index == 0:
        return base
    return base.with_name(f"{base.stem}.{index}{base.suffix}")


def write_atomic(path: Path, data: bytes, fsync: bool = False) -> None:
    """Write through a temporary file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)


class RotatingFile:
    """One logical append-only text file: ``template`` with ``{date}``, rotated by size.

    ``header`` is written at the top of every new (empty) file (CSV). ``fsync``: ``always``
    after every write, ``interval`` at most every ``fsync_interval_s`` (call :meth:`maybe_sync`),
    ``never`` leaves it to the OS (every write is still flushed to the OS at once).
    """

    def __init__(self, template: str, max_bytes: int = 0, header: str | None = None,
                 fsync: FsyncPolicy = "interval", fsync_interval_s: float = 1.0) -> None:
        self.template = template
        self.max_bytes = max_bytes
        self.header = header
        self.fsync = fsync
        self.fsync_interval_s = fsync_interval_s
        self.fh: IO[str] | None = None
        self.path: Path | None = None
        self.base: Path | None = None
        self.index = 0
        self.size = 0
        self.dirty = False
        self.last_sync = time.monotonic()
        self.files: list[Path] = []  # every file written to, in order

    def base_for(self, date: str) -> Path:
        return Path(self.template.replace("{date}", date))

    def write(self, text: str, date: str) -> Path:
        """Append ``text`` to the file for ``date`` (rotating first if it would overflow)."""
        data = text.encode("utf-8")
        base = self.base_for(date)
        if self.fh is None or base != self.base:
            self._open_latest(base)
        if self.max_bytes and self.size > self._header_bytes() and self.size + len(data) > self.max_bytes:
            self._open(self.index + 1)
        assert self.fh is not None and self.path is not None
        self.fh.write(text)
        self.fh.flush()
        self.size += len(data)
        self.dirty = True
        if self.fsync == "always":
            self.sync()
        return self.path

    def _header_bytes(self) -> int:
        return len(self.header.encode("utf-8")) if self.header else 0

    def _open_latest(self, base: Path) -> None:
        base.parent.mkdir(parents=True, exist_ok=True)
        self.base = base
        pattern = re.compile(re.escape(base.stem) + r"\.(\d+)" + re.escape(base.suffix) + r"$")
        indices = [int(m.group(1)) for name in os.listdir(base.parent) if (m := pattern.match(name))]
        self._open(max(indices, default=0))

    def _open(self, index: int) -> None:
        self.close()
        assert self.base is not None
        self.index = index
        self.path = numbered(self.base, index)
        self.fh = open(self.path, "a", encoding="utf-8", newline="")
        self.size = self.path.stat().st_size
        if self.path not in self.files:
            self.files.append(self.path)
        if self.size == 0 and self.header:
            self.fh.write(self.header)
            self.fh.flush()
            self.size = self._header_bytes()
            self.dirty = True

    def sync(self) -> None:
        if self.fh is not None and self.dirty:
            self.fh.flush()
            os.fsync(self.fh.fileno())
        self.dirty = False
        self.last_sync = time.monotonic()

    def maybe_sync(self) -> None:
        """For the ``interval`` policy: fsync when data is waiting and the interval has passed."""
        if self.fsync == "interval" and self.dirty and time.monotonic() - self.last_sync >= self.fsync_interval_s:
            self.sync()

    def close(self) -> None:
        if self.fh is not None:
            if self.fsync != "never":
                self.sync()
            self.fh.close()
            self.fh = None
