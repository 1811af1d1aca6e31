"""A durable, bounded, ordered on-disk queue of byte records (the Kafka stage's spool).

Why a spool of our own: an edge box must keep plate events while the broker is unreachable, for
minutes or days, across restarts and ``kill -9``, without growing past its disk; a Kafka
client's memory queue does none of that. The format is deliberately plain:

- **Segments**: ``<path>/<first seq, 20 digits>.seg``, append-only. A segment is closed once it
  reaches ``segment_bytes``; the next append starts a new one.
- **Records**: a 16-byte header ``<u32 length, u32 crc32, u64 seq>`` (little-endian) and the
  payload. The CRC covers length, seq and payload, so a torn write (power cut, full disk) is
  recognised. Every record reaches the operating system in one ``os.write`` before ``append``
  returns, so a killed process loses nothing; ``fsync`` decides what a power cut may lose.
- **Head**: ``<path>/head`` holds the first sequence number not yet acknowledged
  (``<u64 seq, u32 crc32>``, replaced atomically). :meth:`Spool.ack` moves it; segments wholly
  before it are deleted.
- **Opening** scans every segment and cuts each one at its first bad record (a torn tail after a
  crash: the usual case; or corruption in the middle of an old segment, which loses the rest of
  that segment). What was cut is counted in ``torn_bytes`` and logged.
- **Bound**: when an append would take the spool past ``max_bytes``, whole segments are dropped,
  oldest first, and their unacknowledged records counted in ``dropped``: the newest data is
  kept, since an operator who lets a spool fill has already lost the old.
- **One owner**: ``<path>/lock`` is held with ``flock`` while the spool is open (released by the
  kernel when the process dies, even by ``kill -9``); a second opener gets :class:`SpoolLocked`.

Thread safety: one lock guards everything, so one thread may append while another reads and
acknowledges (the Kafka stage does exactly that).

Sequence numbers start at 1, increase by one per record and never repeat in one folder (the
head file keeps them going when the spool is empty).
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["Spool", "SpoolError", "SpoolLocked", "SpoolFsync", "HEADER_BYTES"]

log = logging.getLogger(__name__)

SpoolFsync = Literal["always", "batch", "never"]
_HEADER = struct.Struct("<IIQ")  # length, crc32, seq
HEADER_BYTES = _HEADER.size
_HEAD = struct.Struct("<QI")  # head seq, crc32
_SUFFIX = ".seg"
MAX_RECORD_BYTES = 64 * 1024 * 1024


class SpoolError(RuntimeError):
    """The spool cannot take a record (larger than the bound, disk full, closed)."""


class SpoolLocked(SpoolError):
    """Another process (or another Spool object) has this folder open."""


def _crc(length: int, seq: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<IQ", length, seq)))


@dataclass
class _Segment:
    first_seq: int
    path: Path
    size: int = 0
    last_seq: int = 0  # seq of the last record; first_seq - 1 while empty

    @property
    def count(self) -> int:
        return self.last_seq - self.first_seq + 1


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """An append-only, crash-safe, bounded queue of byte records in folder ``path``.

    ``fsync``: ``always`` fsyncs after every append (a power cut loses nothing acknowledged by
    ``append``); ``batch`` at most every ``fsync_interval_s`` (checked on append and by
    :meth:`sync_if_due`, which the owner should call periodically); ``never`` leaves it to the OS.
    A process crash loses nothing with any policy.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int = 256 * 1024 * 1024,
                 segment_bytes: int = 8 * 1024 * 1024, fsync: SpoolFsync = "always",
                 fsync_interval_s: float = 1.0) -> None:
        if max_bytes < 4 * HEADER_BYTES:
            raise ValueError(f"max_bytes {max_bytes} is too small")
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        # a bound can only be kept segment by segment: keep segments small against it
        self.segment_bytes = max(4096, min(int(segment_bytes), self.max_bytes // 8))
        self.fsync = fsync
        self.fsync_interval_s = fsync_interval_s
        self.dropped = 0       # records dropped unacknowledged to stay within max_bytes
        self.torn_bytes = 0    # bytes cut off at opening (torn tails, corruption)
        self._lock = threading.RLock()
        self._segments: list[_Segment] = []
        self._fd: int | None = None  # append fd of the last segment
        self._dirty = False
        self._last_sync = time.monotonic()
        self._cursor: tuple[int, int, int] | None = None  # (next seq, segment first_seq, offset)
        self._closed = False
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            raise SpoolLocked(f"spool {self.path} is in use by another process") from exc
        try:
            self._head = self._read_head()
            self._open_segments()
        except BaseException:
            self._release()
            raise

    # -- opening -----------------------------------------------------------------------------------

    def _read_head(self) -> int:
        try:
            data = (self.path / "head").read_bytes()
        except FileNotFoundError:
            return 1
        if len(data) == _HEAD.size:
            seq, crc = _HEAD.unpack(data)
            if zlib.crc32(data[:8]) == crc:
                return max(1, seq)
        log.warning("spool %s: head file is damaged; replaying from the oldest record", self.path)
        return 1

    def _write_head(self) -> None:
        tmp = self.path / "head.tmp"
        data = struct.pack("<Q", self._head)
        with open(tmp, "wb") as fh:
            fh.write(data + struct.pack("<I", zlib.crc32(data)))
            if self.fsync != "never":
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, self.path / "head")
        if self.fsync != "never":
            _fsync_dir(self.path)

    def _scan(self, seg: _Segment) -> None:
        """Set ``size``/``last_seq`` to the valid prefix of the file; cut off what follows."""
        valid = 0
        last = seg.first_seq - 1
        with open(seg.path, "rb") as fh:
            data = fh.read()
        while valid + HEADER_BYTES <= len(data):
            length, crc, seq = _HEADER.unpack_from(data, valid)
            end = valid + HEADER_BYTES + length
            if seq != last + 1 or length > MAX_RECORD_BYTES or end > len(data):
                break
            if _crc(length, seq, data[valid + HEADER_BYTES:end]) != crc:
                break
            valid, last = end, seq
        if valid < len(data):
            cut = len(data) - valid
            self.torn_bytes += cut
            log.warning("spool %s: cut %d bytes of a torn or damaged record off %s", self.path, cut, seg.path.name)
            with open(seg.path, "r+b") as fh:
                fh.truncate(valid)
                fh.flush()
                os.fsync(fh.fileno())
        seg.size, seg.last_seq = valid, last

    def _open_segments(self) -> None:
        for stray in self.path.glob("*.tmp"):
            stray.unlink()
        found = []
        for p in self.path.glob("*" + _SUFFIX):
            try:
                found.append(_Segment(int(p.stem), p))
            except ValueError:
                continue
        found.sort(key=lambda s: s.first_seq)
        for seg in found:
            self._scan(seg)
            if seg.count <= 0 or seg.last_seq < self._head:
                seg.path.unlink()  # empty, or wholly acknowledged before the crash
                continue
            self._segments.append(seg)
        last = self._segments[-1] if self._segments else None
        self._next_seq = max(self._head, last.last_seq + 1 if last else 1)
        if last is not None and last.size < self.segment_bytes:
            self._fd = os.open(last.path, os.O_WRONLY | os.O_APPEND)

    # -- writing -----------------------------------------------------------------------------------

    def append(self, payload: bytes) -> int:
        """Add a record at the end; returns its sequence number. Drops the oldest segments when
        the spool would grow past ``max_bytes`` (counted in ``dropped``)."""
        payload = bytes(payload)
        size = HEADER_BYTES + len(payload)
        if size > self.max_bytes or len(payload) > MAX_RECORD_BYTES:
            raise SpoolError(f"record of {len(payload)} bytes does not fit a spool of {self.max_bytes} bytes")
        with self._lock:
            self._check_open()
            while self._segments and self.bytes + size > self.max_bytes:
                self._drop_oldest()
            seg = self._segments[-1] if self._segments and self._fd is not None else None
            if seg is None or (seg.size > 0 and seg.size + size > self.segment_bytes):
                seg = self._new_segment()
            seq = self._next_seq
            data = _HEADER.pack(len(payload), _crc(len(payload), seq, payload), seq) + payload
            assert self._fd is not None
            try:
                written = 0
                while written < len(data):
                    written += os.write(self._fd, data[written:])
            except OSError as exc:  # disk full: take the partial record back off
                os.ftruncate(self._fd, seg.size)
                raise SpoolError(f"spool {self.path}: cannot write: {exc}") from exc
            seg.size += len(data)
            seg.last_seq = seq
            self._next_seq = seq + 1
            self._dirty = True
            if self.fsync == "always":
                self._sync()
            elif self.fsync == "batch":
                self._sync_if_due()
            return seq

    def _new_segment(self) -> _Segment:
        self._close_fd()
        seg = _Segment(self._next_seq, self.path / f"{self._next_seq:020d}{_SUFFIX}", 0, self._next_seq - 1)
        self._fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        self._segments.append(seg)
        if self.fsync != "never":
            _fsync_dir(self.path)
        return seg

    def _drop_oldest(self) -> None:
        seg = self._segments[0]
        lost = max(0, seg.last_seq - max(seg.first_seq, self._head) + 1)
        if lost:
            self.dropped += lost
            log.warning("spool %s is full (%d bytes): dropped the %d oldest records", self.path, self.max_bytes, lost)
        self._head = max(self._head, seg.last_seq + 1)
        self._remove(seg)
        self._write_head()

    def _remove(self, seg: _Segment) -> None:
        if seg is self._segments[-1]:
            self._close_fd()
        self._segments.remove(seg)
        seg.path.unlink(missing_ok=True)
        if self._cursor is not None and self._cursor[1] == seg.first_seq:
            self._cursor = None

    def _close_fd(self) -> None:
        if self._fd is not None:
            if self._dirty and self.fsync != "never":
                os.fsync(self._fd)
            self._dirty = False
            os.close(self._fd)
            self._fd = None

    def _sync(self) -> None:
        if self._fd is not None and self._dirty:
            os.fsync(self._fd)
        self._dirty = False
        self._last_sync = time.monotonic()

    def _sync_if_due(self) -> None:
        if self._dirty and time.monotonic() - self._last_sync >= self.fsync_interval_s:
            self._sync()

    def sync(self) -> None:
        """fsync what was appended (whatever the policy)."""
        with self._lock:
            if not self._closed:
                self._sync()

    def sync_if_due(self) -> None:
        """With ``fsync: batch``: fsync if ``fsync_interval_s`` passed since the last one."""
        with self._lock:
            if not self._closed and self.fsync == "batch":
                self._sync_if_due()

    # -- reading and acknowledging -----------------------------------------------------------------

    def read(self, from_seq: int = 0, max_records: int = 100, max_bytes: int = 1024 * 1024) -> list[tuple[int, bytes]]:
        """Up to ``max_records`` records (at least one if any) with ``seq >= from_seq``, oldest
        first, as ``(seq, payload)``; records before the head (acknowledged or dropped) are
        skipped. Reading does not remove anything: :meth:`ack` does."""
        with self._lock:
            self._check_open()
            want = max(from_seq, self._head)
            out: list[tuple[int, bytes]] = []
            total = 0
            for seg in self._segments:
                if seg.last_seq < want or seg.count <= 0:
                    continue
                offset = 0
                if self._cursor is not None and self._cursor[1] == seg.first_seq and self._cursor[0] <= want:
                    offset, seq_at = self._cursor[2], self._cursor[0]
                else:
                    seq_at = seg.first_seq
                with open(seg.path, "rb") as fh:
                    fh.seek(offset)
                    while seq_at <= seg.last_seq and len(out) < max_records:
                        header = fh.read(HEADER_BYTES)
                        length, _crc32, seq = _HEADER.unpack(header)
                        if seq >= want:
                            if out and total + length > max_bytes:
                                break
                            out.append((seq, fh.read(length)))
                            total += length
                        else:
                            fh.seek(length, os.SEEK_CUR)
                        offset += HEADER_BYTES + length
                        seq_at = seq + 1
                    self._cursor = (seq_at, seg.first_seq, offset)
                if len(out) >= max_records or (out and total >= max_bytes) or seq_at <= seg.last_seq:
                    break
                want = seg.last_seq + 1
            return out

    def ack(self, through_seq: int) -> None:
        """Every record with ``seq <= through_seq`` is done: remove it (segments wholly done are
        deleted; the head file is rewritten)."""
        with self._lock:
            self._check_open()
            new_head = min(through_seq + 1, self._next_seq)
            if new_head <= self._head:
                return
            self._head = new_head
            for seg in list(self._segments):
                if seg.last_seq < self._head:
                    self._remove(seg)
            self._write_head()

    # -- state -------------------------------------------------------------------------------------

    @property
    def head(self) -> int:
        """Sequence number of the oldest record still held (or the next one, when empty)."""
        return self._head

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def records(self) -> int:
        """Records held (appended, not yet acknowledged or dropped)."""
        with self._lock:
            return sum(max(0, s.last_seq - max(s.first_seq, self._head) + 1) for s in self._segments)

    @property
    def bytes(self) -> int:
        """Bytes on disk in segments (acknowledged records count until their segment is deleted)."""
        with self._lock:
            return sum(s.size for s in self._segments)

    def __len__(self) -> int:
        return self.records

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"records": self.records, "bytes": self.bytes, "segments": len(self._segments),
                    "dropped": self.dropped, "torn_bytes": self.torn_bytes, "head": self._head}

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolError(f"spool {self.path} is closed")

    def close(self) -> None:
        """fsync (unless ``never``) and release the folder."""
        with self._lock:
            if self._closed:
                return
            self._close_fd()
            self._closed = True
            self._release()

    def _release(self) -> None:
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        finally:
            os.close(self._lock_fd)

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
