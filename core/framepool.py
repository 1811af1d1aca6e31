"""Shared-memory frame slots: written once by the producing stage, read in place downstream.

Safety rests on two mechanisms that do not need cross-process locks (a stage killed with
``kill -9`` inside a lock would wedge the graph):

* **Leases, counted by the owner only.** A slot starts with one lease per path from the producer
  to an end of the graph (``paths``). Whoever ends a path (a sink, or a stage dropping the
  envelope) sends a release to the owner's endpoint; only the owner's single thread changes the
  counts. A slot is reused once its count reaches zero, or when its lease expires (a consumer
  crashed), which is counted as ``reclaimed``.
* **Generations (a seqlock).** The slot header holds a generation that the owner makes odd while
  writing and even once the frame is published. An envelope carries the generation it was
  published with; a reader checks it before and after using the frame, so a reader can never act
  on a frame that was overwritten under it (it gets :class:`StaleFrame` and the frame is dropped).

Python's ``resource_tracker`` never learns about our segments: it would otherwise unlink a
segment when any attached reader exits, and warn about segments it did not create. Segment names
start with ``alpr.<run>.<stage>.<pid>.`` so the supervisor can unlink what a killed stage left.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from multiprocessing import resource_tracker, shared_memory

import _posixshmem

import numpy as np

from .envelope import FrameRef

SHM_DIR = "/dev/shm"
_HEADER_ALIGN = 4096


class StaleFrame(Exception):
    """The slot was reused (or its pool is gone) before the reader was done with it."""


def _open(name: str, create: bool, size: int = 0) -> shared_memory.SharedMemory:
    """Open a segment without Python's resource tracker, which would unlink it when any reader
    exits, warn about it, and cost every stage an extra tracker process. We clean up ourselves."""
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, create=create, size=size, track=False)
    register = resource_tracker.register
    resource_tracker.register = lambda *args, **kwargs: None  # type: ignore[assignment]
    try:
        return shared_memory.SharedMemory(name=name, create=create, size=size)
    finally:
        resource_tracker.register = register  # type: ignore[assignment]


def _unlink(shm: shared_memory.SharedMemory) -> None:
    """Unlink without telling the resource tracker (it never knew the segment)."""
    try:
        _posixshmem.shm_unlink(shm._name)  # type: ignore[attr-defined]
    except FileNotFoundError:
        pass


def segment_prefix(run: str, stage: str, pid: int | None = None) -> str:
    """Name prefix of the segments a stage process creates (without the leading slash)."""
    return f"alpr.{run}.{stage}.{pid if pid is not None else os.getpid()}."


def unlink_segments(prefix: str) -> list[str]:
    """Unlink every segment whose name starts with ``prefix``; returns the names removed."""
    removed = []
    try:
        names = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return removed
    for name in names:
        if name.startswith(prefix):
            try:
                os.unlink(os.path.join(SHM_DIR, name))
                removed.append(name)
            except FileNotFoundError:
                pass
    return removed


@lru_cache(maxsize=64)
def _dtype_info(dtype: str) -> tuple[str, int]:
    """Canonical name and item size; cached because np.dtype() costs ~10 µs on the hot path."""
    dt = np.dtype(dtype)
    return str(dt), dt.itemsize


def _slot_bytes(shape: tuple[int, ...], dtype: str) -> int:
    return math.prod(shape) * _dtype_info(dtype)[1]


class _Segment:
    """One shared-memory block: a fixed header (magic, slot count, slot size), per-slot
    generations, then the slots. Owner and readers map it the same way."""

    MAGIC = 0x414C5052544F504F  # "ALPRTOPO"
    FIXED = 4  # uint64 words before the generations

    def __init__(self, shm: shared_memory.SharedMemory) -> None:
        head = np.ndarray((self.FIXED,), dtype=np.uint64, buffer=shm.buf)
        if int(head[0]) != self.MAGIC:
            raise StaleFrame(f"{shm.name} is not an alpr-topo frame pool")
        self.shm = shm
        self.slots = int(head[1])
        self.slot_bytes = int(head[2])
        self.generations = np.ndarray((self.slots,), dtype=np.uint64, buffer=shm.buf, offset=self.FIXED * 8)
        self.data_offset = self.header_bytes(self.slots)

    @classmethod
    def header_bytes(cls, slots: int) -> int:
        return _HEADER_ALIGN * (((cls.FIXED + slots) * 8 + _HEADER_ALIGN - 1) // _HEADER_ALIGN)

    @classmethod
    def create(cls, name: str, slots: int, slot_bytes: int) -> "_Segment":
        shm = _open(name, create=True, size=cls.header_bytes(slots) + slots * slot_bytes)
        head = np.ndarray((cls.FIXED + slots,), dtype=np.uint64, buffer=shm.buf)
        head[:] = 0
        head[1], head[2] = slots, slot_bytes
        head[0] = cls.MAGIC  # last, so a reader never sees a valid magic with a bad layout
        return cls(shm)

    def array(self, slot: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        nbytes = _slot_bytes(shape, dtype)
        if nbytes > self.slot_bytes:
            raise StaleFrame(f"frame of {nbytes} bytes does not fit a {self.slot_bytes}-byte slot")
        start = self.data_offset + slot * self.slot_bytes
        return np.ndarray(shape, dtype=dtype, buffer=self.shm.buf[start : start + nbytes])

    def close(self, unlink: bool) -> None:
        """Let go of the mapping without unmapping it under live numpy views.

        ``SharedMemory.close()`` would unmap at once: numpy arrays made over the buffer keep the
        mmap object, not a buffer export, so touching one afterwards would crash the process.
        Dropping our references instead unmaps when the last array is freed.
        """
        self.generations = None  # type: ignore[assignment]
        shm = self.shm
        if shm._buf is not None:  # type: ignore[attr-defined]
            shm._buf.release()  # type: ignore[attr-defined]
            shm._buf = None  # type: ignore[attr-defined]
        shm._mmap = None  # type: ignore[attr-defined]
        if shm._fd >= 0:  # type: ignore[attr-defined]
            os.close(shm._fd)  # type: ignore[attr-defined]
            shm._fd = -1  # type: ignore[attr-defined]
        if unlink:
            _unlink(shm)


@dataclass
class PoolStats:
    allocated: int = 0
    released: int = 0
    reclaimed: int = 0  # leases that expired: a consumer died or hung holding the frame
    dropped_full: int = 0  # frames a live source dropped because every slot was in use
    stale_releases: int = 0  # releases for a slot that had already been reclaimed
    resized: int = 0


@dataclass
class _Lease:
    refs: int
    since: float
    tracked: list = field(default_factory=list)  # zmq MessageTrackers of zero-copy sends


class FramePool:
    """The owner's side: allocate slots, publish frames, take releases.

    ``paths`` is the number of releases one frame needs before its slot is free again; the
    supervisor computes it from the topology (fan-out multiplies it, replicas do not).
    """

    def __init__(
        self,
        prefix: str,
        owner_endpoint: str,
        paths: int,
        slots: int = 16,
        when_full: str = "wait",
        lease_timeout_s: float = 10.0,
    ) -> None:
        if when_full not in ("wait", "drop"):
            raise ValueError("when_full must be 'wait' or 'drop'")
        self.prefix = prefix
        self.owner = owner_endpoint
        self.paths = max(1, paths)
        self.slots = slots
        self.when_full = when_full
        self.lease_timeout_s = lease_timeout_s
        self.stats = PoolStats()
        self._segment: _Segment | None = None
        self._retired: dict[str, _Segment] = {}
        self._retired_leases: dict[str, dict[int, _Lease]] = {}
        self._free: list[int] = []
        self._leases: dict[int, _Lease] = {}
        self._count = 0

    # -- owner API ---------------------------------------------------------------------------

    @property
    def name(self) -> str | None:
        return self._segment.shm.name if self._segment else None

    def free_slots(self) -> int:
        """Slots ready for a new frame now (after expiring overdue leases)."""
        self.expire()
        return len(self._free) if self._segment else self.slots

    def in_use(self) -> int:
        return len(self._leases) + sum(len(v) for v in self._retired_leases.values())

    def allocate(self, shape: tuple[int, ...], dtype: str = "uint8") -> tuple[FrameRef, np.ndarray] | None:
        """A writable slot for one frame, or None when all are leased (counted as a drop).

        The slot's generation turns odd until :meth:`publish`, so nobody can read it half-written.
        """
        nbytes = _slot_bytes(shape, dtype)
        if self._segment is None or nbytes > self._segment.slot_bytes:
            self._grow(nbytes)
        seg = self._segment
        assert seg is not None
        self.expire()
        if not self._free:
            self.stats.dropped_full += 1
            return None
        slot = self._free.pop()
        current = int(seg.generations[slot])
        generation = current + 1 if current % 2 == 0 else current + 2  # odd: being written
        seg.generations[slot] = generation
        self._leases[slot] = _Lease(self.paths, time.monotonic())
        self.stats.allocated += 1
        ref = FrameRef(seg.shm.name, slot, generation + 1, tuple(shape), _dtype_info(dtype)[0], self.owner)
        return ref, seg.array(slot, tuple(shape), dtype)

    def publish(self, ref: FrameRef) -> None:
        """Make a written frame readable (its generation even again)."""
        seg = self._segment_of(ref.pool)
        if seg is not None:
            seg.generations[ref.slot] = ref.generation

    def discard(self, ref: FrameRef) -> None:
        """Give back a slot that was allocated but never sent."""
        self.release(ref.pool, ref.slot, ref.generation, self.paths)

    def release(self, pool: str, slot: int, generation: int, count: int = 1) -> None:
        """Take ``count`` releases for a frame; frees the slot when none are left."""
        seg = self._segment_of(pool)
        leases = self._leases if seg is self._segment else self._retired_leases.get(pool, {})
        lease = leases.get(slot)
        if seg is None or lease is None or int(seg.generations[slot]) not in (generation, generation - 1):
            self.stats.stale_releases += 1
            return
        lease.refs -= count
        if lease.refs <= 0:
            del leases[slot]
            self.stats.released += 1
            seg.generations[slot] = generation + 1  # odd while free: late readers see it is gone
            if seg is self._segment:
                self._free.append(slot)
            else:
                self._drop_retired_if_idle(pool)

    def hold_until_sent(self, ref: FrameRef, tracker: object) -> None:
        """Keep a slot leased until a zero-copy send of its bytes has left the process."""
        lease = self._leases.get(ref.slot)
        if lease is not None and ref.pool == self.name:
            lease.tracked.append(tracker)

    def expire(self) -> None:
        """Reclaim slots whose lease outlived ``lease_timeout_s`` (a consumer crashed or hung)."""
        now = time.monotonic()
        for pool, leases in list(self._retired_leases.items()):
            for slot, lease in list(leases.items()):
                if now - lease.since > self.lease_timeout_s and all(t.done for t in lease.tracked):
                    del leases[slot]
                    self.stats.reclaimed += 1
            self._drop_retired_if_idle(pool)
        if not self._leases:
            return
        for slot, lease in list(self._leases.items()):
            if now - lease.since > self.lease_timeout_s and self._segment is not None:
                if any(not t.done for t in lease.tracked):
                    continue
                del self._leases[slot]
                self.stats.reclaimed += 1
                if int(self._segment.generations[slot]) % 2 == 0:
                    self._segment.generations[slot] += np.uint64(1)  # odd: late readers see it is gone
                self._free.append(slot)

    def close(self) -> None:
        """Unlink every segment. Readers that still map it keep their view until they let go."""
        for seg in [self._segment, *self._retired.values()]:
            if seg is not None:
                seg.close(unlink=True)
        self._segment = None
        self._retired.clear()

    # -- internals ---------------------------------------------------------------------------

    def _grow(self, slot_bytes: int) -> None:
        """Create a segment big enough for ``slot_bytes``; the old one retires once released."""
        if self._segment is not None:
            self.stats.resized += 1
            old = self._segment
            self._retired[old.shm.name] = old
            self._retired_leases[old.shm.name] = self._leases
            self._drop_retired_if_idle(old.shm.name)
        slot_bytes = (slot_bytes + 63) // 64 * 64
        name = f"{self.prefix}{self._count}"
        self._count += 1
        self._segment = _Segment.create(name, self.slots, slot_bytes)
        self._leases = {}
        self._free = list(range(self.slots - 1, -1, -1))

    def _segment_of(self, pool: str) -> _Segment | None:
        if self._segment is not None and self._segment.shm.name == pool:
            return self._segment
        return self._retired.get(pool)

    def _drop_retired_if_idle(self, pool: str) -> None:
        if self._retired_leases.get(pool):
            return
        seg = self._retired.pop(pool, None)
        self._retired_leases.pop(pool, None)
        if seg is not None:
            seg.close(unlink=True)


class PoolReader:
    """The consumer's side: map pools by name and hand out read-only views, checked for reuse."""

    def __init__(self) -> None:
        self._segments: dict[str, _Segment] = {}

    def view(self, ref: FrameRef) -> np.ndarray:
        """The frame, in place and read-only; raises :class:`StaleFrame` if it was reused."""
        seg = self._attach(ref.pool)
        if int(seg.generations[ref.slot]) != ref.generation:
            raise StaleFrame(f"slot {ref.slot} of {ref.pool} was reused before it was read")
        array = seg.array(ref.slot, ref.shape, ref.dtype)
        array.flags.writeable = False
        return array

    def still_valid(self, ref: FrameRef) -> bool:
        """True when the slot still holds the frame the reference was made for."""
        try:
            seg = self._attach(ref.pool)
        except StaleFrame:
            return False
        return int(seg.generations[ref.slot]) == ref.generation

    def forget(self, pool: str) -> None:
        """Drop the mapping of a pool that its owner retired."""
        seg = self._segments.pop(pool, None)
        if seg is not None:
            seg.close(unlink=False)

    def close(self) -> None:
        for seg in self._segments.values():
            seg.close(unlink=False)
        self._segments.clear()

    def _attach(self, pool: str) -> _Segment:
        seg = self._segments.get(pool)
        if seg is None:
            try:
                shm = _open(pool, create=False)
            except FileNotFoundError as exc:
                raise StaleFrame(f"pool {pool} no longer exists") from exc
            seg = _Segment(shm)
            self._segments[pool] = seg
        return seg
