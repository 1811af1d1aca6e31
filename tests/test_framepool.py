"""Shared-memory frame pool: leases, generations (seqlock), growth, expiry, cross-process reads
and segment cleanup (``core/framepool.py``).

Every test uses its own run name (a uuid) so segment prefixes never collide, and the fixtures
unlink whatever a test left in ``/dev/shm``. Time is faked where a lease must (or must not) have
expired, so no assertion depends on how fast the machine is.

Views are dropped before a pool or reader is closed: see
``test_views_stay_readable_after_close`` for why that matters.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from alpr_topo.core import framepool
from alpr_topo.core.envelope import FrameRef
from alpr_topo.core.framepool import (
    SHM_DIR,
    FramePool,
    PoolReader,
    StaleFrame,
    segment_prefix,
    unlink_segments,
)

OWNER = "ipc:///tmp/alpr-test-owner"  # never bound: the pool only stores it in its refs


# -- helpers and fixtures ----------------------------------------------------------------------


def shm_exists(name: str) -> bool:
    return os.path.exists(os.path.join(SHM_DIR, name))


def shm_names(prefix: str) -> list[str]:
    return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class FakeClock:
    """Stands in for the ``time`` module inside ``framepool``: ``monotonic`` only moves on ``advance``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(framepool, "time", types.SimpleNamespace(monotonic=fake.monotonic))
    return fake


@pytest.fixture
def run() -> Any:
    """A unique run name; every segment with its prefix is unlinked afterwards."""
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    unlink_segments(f"alpr.{name}.")


@pytest.fixture
def make_pool(run: str) -> Any:
    """Factory for owner pools of this run; all are closed at the end of the test."""
    pools: list[FramePool] = []

    def make(stage: str = "cam", **kwargs: Any) -> FramePool:
        kwargs.setdefault("paths", 1)
        kwargs.setdefault("slots", 4)
        pool = FramePool(segment_prefix(run, stage), OWNER, **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


@pytest.fixture
def reader() -> Any:
    r = PoolReader()
    yield r
    r.close()


def put_frame(pool: FramePool, value: int, shape: tuple[int, ...] = (6, 8, 3), dtype: str = "uint8") -> FrameRef:
    """Allocate, fill with ``value`` and publish one frame; returns its reference."""
    got = pool.allocate(shape, dtype)
    assert got is not None, "pool unexpectedly full"
    ref, array = got
    array[...] = value
    pool.publish(ref)
    return ref


def release(pool: FramePool, ref: FrameRef, count: int = 1) -> None:
    pool.release(ref.pool, ref.slot, ref.generation, count)


# -- allocate / publish / view ---------------------------------------------------------------


def test_round_trip_gives_the_written_frame(make_pool, reader) -> None:
    pool = make_pool()
    got = pool.allocate((6, 8, 3), "uint8")
    assert got is not None
    ref, array = got
    assert array.shape == (6, 8, 3) and array.dtype == np.uint8 and array.flags.writeable
    pattern = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    array[...] = pattern
    pool.publish(ref)

    assert ref.pool == pool.name and shm_exists(ref.pool)
    assert ref.shape == (6, 8, 3) and ref.dtype == "uint8" and ref.owner == OWNER
    assert ref.generation % 2 == 0  # even: the published state
    view = reader.view(ref)
    assert view.shape == (6, 8, 3) and view.dtype == np.uint8
    np.testing.assert_array_equal(view, pattern)
    assert reader.still_valid(ref)
    assert pool.stats.allocated == 1


@pytest.mark.parametrize("shape, dtype", [((5, 7), "float32"), ((3, 4, 2), "uint16"), ((17,), "int64")])
def test_round_trip_keeps_shape_and_dtype(make_pool, reader, shape, dtype) -> None:
    pool = make_pool()
    ref, array = pool.allocate(shape, dtype)
    data = (np.arange(int(np.prod(shape))) * 3).astype(dtype).reshape(shape)
    array[...] = data
    pool.publish(ref)
    assert ref.dtype == str(np.dtype(dtype))
    view = reader.view(ref)
    assert view.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(view, data)


def test_views_are_read_only(make_pool, reader) -> None:
    ref = put_frame(make_pool(), 5)
    view = reader.view(ref)
    assert not view.flags.writeable
    with pytest.raises(ValueError):
        view[0, 0, 0] = 1
    assert int(reader.view(ref)[0, 0, 0]) == 5


def test_views_are_zero_copy(make_pool, reader) -> None:
    pool = make_pool()
    ref, array = pool.allocate((6, 8, 3))
    array[...] = 1
    pool.publish(ref)
    first, second = reader.view(ref), reader.view(ref)
    assert np.shares_memory(first, second)  # the same mapped bytes, not two copies
    array[2, 3, 1] = 200  # the owner's write shows through the reader's separate mapping
    assert int(first[2, 3, 1]) == 200 and int(second[2, 3, 1]) == 200


def test_frames_in_different_slots_do_not_overlap(make_pool, reader) -> None:
    pool = make_pool(slots=3)
    refs = [put_frame(pool, v) for v in (10, 20, 30)]
    assert len({r.slot for r in refs}) == 3
    views = [reader.view(r) for r in refs]
    for i, a in enumerate(views):
        for b in views[i + 1 :]:
            assert not np.shares_memory(a, b)
    assert [int(v.min()) for v in views] == [10, 20, 30]
    assert [int(v.max()) for v in views] == [10, 20, 30]


# -- generations (seqlock) ---------------------------------------------------------------------


def test_view_before_publish_is_stale(make_pool, reader) -> None:
    pool = make_pool()
    ref, array = pool.allocate((4, 4))
    array[...] = 9
    assert not reader.still_valid(ref)  # generation is odd while the owner writes
    with pytest.raises(StaleFrame):
        reader.view(ref)
    pool.publish(ref)
    assert reader.still_valid(ref)
    assert int(reader.view(ref)[0, 0]) == 9


def test_released_slot_is_free_and_its_ref_stale(make_pool, reader) -> None:
    pool = make_pool(slots=2)
    ref = put_frame(pool, 3)
    assert reader.view(ref) is not None
    assert pool.free_slots() == 1 and pool.in_use() == 1
    release(pool, ref)
    assert pool.free_slots() == 2 and pool.in_use() == 0
    assert pool.stats.released == 1
    assert not reader.still_valid(ref)
    with pytest.raises(StaleFrame):
        reader.view(ref)


def test_reallocation_bumps_the_generation(make_pool, reader) -> None:
    pool = make_pool(slots=1)
    old = put_frame(pool, 1)
    kept = reader.view(old)  # a reader that mapped the frame before it was reused
    release(pool, old)
    new = put_frame(pool, 2)
    assert new.slot == old.slot and new.pool == old.pool
    assert new.generation > old.generation and new.generation % 2 == 0
    assert not reader.still_valid(old)  # the check "after use" catches the overwrite
    with pytest.raises(StaleFrame):
        reader.view(old)
    assert int(kept[0, 0, 0]) == 2  # ... which is why it is needed: the bytes did change
    assert int(reader.view(new)[0, 0, 0]) == 2


def test_reader_of_a_closed_pool_gets_stale_frame(make_pool) -> None:
    pool = make_pool()
    ref = put_frame(pool, 1)
    pool.close()
    fresh = PoolReader()
    try:
        assert not fresh.still_valid(ref)
        with pytest.raises(StaleFrame, match="no longer exists"):
            fresh.view(ref)
    finally:
        fresh.close()


# -- leases counted per path -------------------------------------------------------------------


def test_slot_needs_one_release_per_path(make_pool, reader) -> None:
    pool = make_pool(paths=3, slots=2)
    ref = put_frame(pool, 4)
    release(pool, ref)
    release(pool, ref)
    assert pool.free_slots() == 1 and reader.still_valid(ref)
    release(pool, ref)
    assert pool.free_slots() == 2 and not reader.still_valid(ref)
    assert pool.stats.released == 1 and pool.stats.stale_releases == 0


def test_release_with_count_frees_at_once(make_pool, reader) -> None:
    pool = make_pool(paths=3, slots=2)
    ref = put_frame(pool, 4)
    release(pool, ref, count=2)
    assert pool.free_slots() == 1
    release(pool, ref, count=1)
    assert pool.free_slots() == 2
    other = put_frame(pool, 5)
    release(pool, other, count=3)
    assert pool.free_slots() == 2 and pool.stats.released == 2


def test_paths_below_one_count_as_one(make_pool) -> None:
    pool = make_pool(paths=0, slots=1)
    ref = put_frame(pool, 1)
    release(pool, ref)
    assert pool.free_slots() == 1


def test_discard_gives_back_an_unsent_slot(make_pool, reader) -> None:
    pool = make_pool(paths=2, slots=1)
    ref, _ = pool.allocate((4, 4))
    pool.discard(ref)  # never published: all paths' leases go at once
    assert pool.free_slots() == 1
    assert pool.stats.stale_releases == 0
    assert put_frame(pool, 1, (4, 4)).slot == ref.slot


def test_duplicate_release_is_counted_and_ignored(make_pool) -> None:
    pool = make_pool(slots=1)
    ref = put_frame(pool, 1)
    release(pool, ref)
    release(pool, ref)
    assert pool.stats.stale_releases == 1 and pool.stats.released == 1
    assert pool.free_slots() == 1


def test_stale_release_does_not_free_a_reused_slot(make_pool, reader) -> None:
    pool = make_pool(paths=2, slots=1)
    old = put_frame(pool, 1)
    release(pool, old, count=2)
    new = put_frame(pool, 2)
    assert new.slot == old.slot
    release(pool, old)  # a late duplicate from a consumer of the previous frame
    release(pool, old, count=2)
    assert pool.stats.stale_releases == 2
    assert pool.free_slots() == 0 and reader.still_valid(new)
    release(pool, new)  # one of two paths done: the new frame must still be leased
    assert pool.free_slots() == 0 and reader.still_valid(new)
    release(pool, new)
    assert pool.free_slots() == 1 and not reader.still_valid(new)


def test_release_with_a_foreign_generation_or_pool_is_stale(make_pool, reader) -> None:
    pool = make_pool(slots=1)
    ref = put_frame(pool, 1)
    pool.release(ref.pool, ref.slot, ref.generation + 2)
    pool.release("alpr.nosuchpool.0", ref.slot, ref.generation)
    assert pool.stats.stale_releases == 2
    assert pool.free_slots() == 0 and reader.still_valid(ref)


# -- a full pool -------------------------------------------------------------------------------


@pytest.mark.parametrize("when_full", ["wait", "drop"])
def test_full_pool_refuses_and_counts(make_pool, when_full) -> None:
    pool = make_pool(slots=3, when_full=when_full)
    refs = [put_frame(pool, i) for i in range(3)]
    assert pool.free_slots() == 0
    assert pool.allocate((6, 8, 3)) is None
    assert pool.allocate((6, 8, 3)) is None
    assert pool.stats.dropped_full == 2 and pool.stats.allocated == 3
    release(pool, refs[1])
    assert pool.free_slots() == 1
    again = pool.allocate((6, 8, 3))
    assert again is not None and again[0].slot == refs[1].slot
    assert pool.stats.dropped_full == 2


def test_unknown_when_full_policy_is_rejected() -> None:
    with pytest.raises(ValueError, match="when_full"):
        FramePool("alpr.x.y.1.", OWNER, paths=1, when_full="block")


def test_free_slots_before_the_first_frame_is_the_slot_count(make_pool) -> None:
    pool = make_pool(slots=5)
    assert pool.name is None  # no segment yet: it is sized by the first frame
    assert pool.free_slots() == 5


# -- lease expiry ------------------------------------------------------------------------------


def test_expired_lease_is_reclaimed(make_pool, reader, clock) -> None:
    pool = make_pool(slots=2, lease_timeout_s=0.05)
    ref = put_frame(pool, 7)
    clock.advance(0.04)
    assert pool.free_slots() == 1 and pool.stats.reclaimed == 0 and reader.still_valid(ref)
    clock.advance(0.02)
    assert pool.free_slots() == 2  # free_slots() expires overdue leases itself
    assert pool.stats.reclaimed == 1 and pool.stats.released == 0
    assert not reader.still_valid(ref)
    with pytest.raises(StaleFrame):
        reader.view(ref)


def test_expire_reclaims_and_late_release_is_stale(make_pool, reader, clock) -> None:
    pool = make_pool(slots=1, paths=1, lease_timeout_s=0.05)
    old = put_frame(pool, 1)
    clock.advance(0.1)
    pool.expire()
    assert pool.stats.reclaimed == 1
    new = put_frame(pool, 2)
    assert new.slot == old.slot and new.generation > old.generation
    release(pool, old)  # the hung consumer wakes up and releases the old frame
    assert pool.stats.stale_releases == 1
    assert pool.free_slots() == 0 and reader.still_valid(new)


def test_expired_unpublished_slot_is_reusable(make_pool, reader, clock) -> None:
    pool = make_pool(slots=1, lease_timeout_s=0.05)
    abandoned, _ = pool.allocate((4, 4))  # allocated, never published
    clock.advance(0.1)
    assert pool.free_slots() == 1 and pool.stats.reclaimed == 1
    new = put_frame(pool, 3, (4, 4))
    assert new.generation != abandoned.generation
    assert not reader.still_valid(abandoned)
    assert int(reader.view(new)[0, 0]) == 3


def test_lease_held_until_a_tracked_send_is_done(make_pool, clock) -> None:
    pool = make_pool(slots=1, lease_timeout_s=0.05)
    ref = put_frame(pool, 1)
    tracker = types.SimpleNamespace(done=False)
    pool.hold_until_sent(ref, tracker)
    clock.advance(1.0)
    assert pool.free_slots() == 0 and pool.stats.reclaimed == 0  # bytes still being sent
    tracker.done = True
    assert pool.free_slots() == 1 and pool.stats.reclaimed == 1


# -- growing -----------------------------------------------------------------------------------


def test_bigger_frame_grows_into_a_new_segment(make_pool, reader) -> None:
    pool = make_pool(slots=2)
    small = put_frame(pool, 1, (4, 4))
    big = put_frame(pool, 2, (32, 32))
    assert pool.stats.resized == 1
    assert big.pool != small.pool and pool.name == big.pool
    assert shm_exists(small.pool) and shm_exists(big.pool)  # the old frame is still leased
    assert int(reader.view(small)[0, 0]) == 1 and int(reader.view(big)[0, 0]) == 2
    assert pool.in_use() == 2
    assert pool.free_slots() == 1  # the new segment's slots; the old one takes no new frames

    release(pool, small)
    assert not shm_exists(small.pool)  # retired segment unlinked with its last lease
    assert shm_exists(big.pool)
    assert pool.in_use() == 1 and pool.stats.stale_releases == 0
    assert not reader.still_valid(small)

    smaller = put_frame(pool, 3, (4, 4))  # fits the bigger slots: no new segment
    assert smaller.pool == big.pool and pool.stats.resized == 1


def test_growing_with_nothing_leased_unlinks_the_old_segment_at_once(make_pool) -> None:
    pool = make_pool(slots=2)
    small = put_frame(pool, 1, (4, 4))
    release(pool, small)
    big = put_frame(pool, 2, (64, 64))
    assert pool.stats.resized == 1
    assert not shm_exists(small.pool) and shm_exists(big.pool)


def test_retired_segment_needs_every_path(make_pool) -> None:
    pool = make_pool(slots=2, paths=2)
    small = put_frame(pool, 1, (4, 4))
    put_frame(pool, 2, (32, 32))
    release(pool, small)
    assert shm_exists(small.pool)
    release(pool, small)
    assert not shm_exists(small.pool)
    release(pool, small)
    assert pool.stats.stale_releases == 1


def test_expired_lease_on_a_retired_segment_is_reclaimed(make_pool, clock) -> None:
    """A consumer that died holding a frame of a retired segment must not keep it forever.

    The lease of the old segment expires like any other (counted as reclaimed), and with it
    gone the retired segment is unlinked.
    """
    pool = make_pool(slots=2, lease_timeout_s=0.05)
    small = put_frame(pool, 1, (4, 4))
    put_frame(pool, 2, (32, 32))
    clock.advance(1.0)
    pool.expire()
    assert pool.stats.reclaimed == 2, "the retired segment's lease never expires"
    assert not shm_exists(small.pool), "the retired segment stays in /dev/shm until close()"


# -- close -------------------------------------------------------------------------------------


def test_close_unlinks_every_segment(make_pool, run) -> None:
    pool = make_pool(slots=2)
    small = put_frame(pool, 1, (4, 4))  # kept leased: its segment is retired, not yet unlinked
    big = put_frame(pool, 2, (32, 32))
    assert shm_names(segment_prefix(run, "cam")) == sorted([small.pool, big.pool])
    pool.close()
    assert shm_names(segment_prefix(run, "cam")) == []
    assert pool.name is None
    release(pool, small)  # a release arriving after close is harmless
    assert pool.stats.stale_releases == 1


@pytest.mark.parametrize("step, expected", [
    ("reader.close", 7 * 64 * 64),
    ("reader.forget", 7 * 64 * 64),
    ("pool.close", 7 * 64 * 64 - 6),
])
def test_views_stay_readable_after_close(tmp_path: Path, run: str, step: str, expected: int) -> None:
    """``close()`` promises "readers that still map it keep their view until they let go".

    Run in a subprocess: if the mapping is torn down under a live numpy view, touching the view
    crashes the interpreter (SIGSEGV) instead of raising.
    """
    script = tmp_path / "views_after_close.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from alpr_topo.core.framepool import FramePool, PoolReader, segment_prefix

        step = sys.argv[1]
        pool = FramePool(segment_prefix({run!r}, "cam"), "ipc://unused", paths=1, slots=2)
        ref, array = pool.allocate((64, 64))
        array[...] = 7
        pool.publish(ref)
        reader = PoolReader()
        view = reader.view(ref)
        if step == "reader.close":
            reader.close()
            print(int(view.sum()), flush=True)
        elif step == "reader.forget":
            reader.forget(ref.pool)
            print(int(view.sum()), flush=True)
        elif step == "pool.close":
            pool.close()
            array[0, 0] = 1  # the owner's own array of the unlinked segment
            print(int(array.sum()), flush=True)
        pool.close()
        reader.close()
    """))
    result = subprocess.run([sys.executable, str(script), step], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{step}: exit code {result.returncode} (-11 = SIGSEGV)\n{result.stderr}"
    assert result.stdout.split() == [str(expected)]


# -- other processes ---------------------------------------------------------------------------


def _read_in_child(ref: FrameRef, conn: Any) -> None:
    """Runs in a spawned process: map the pool by name and send back what the frame holds."""
    reader = PoolReader()
    try:
        view = reader.view(ref)
        conn.send({"bytes": view.tobytes(), "shape": view.shape, "dtype": str(view.dtype),
                   "writeable": bool(view.flags.writeable), "valid": reader.still_valid(ref)})
        del view
    except Exception as exc:  # report, so the parent's assertion says what went wrong
        conn.send({"error": repr(exc)})
    finally:
        reader.close()
        conn.close()


def test_reader_in_another_process(make_pool, run) -> None:
    pool = make_pool(slots=2)
    ref, array = pool.allocate((12, 10, 3))
    pattern = np.random.default_rng(1).integers(0, 255, size=(12, 10, 3), dtype=np.uint8)
    array[...] = pattern
    pool.publish(ref)
    del array

    mp = multiprocessing.get_context("spawn")
    parent_end, child_end = mp.Pipe(duplex=False)
    child = mp.Process(target=_read_in_child, args=(ref, child_end))
    child.start()
    child_end.close()
    assert parent_end.poll(60), "the reader process sent nothing"
    got = parent_end.recv()
    child.join(60)
    assert child.exitcode == 0
    assert "error" not in got, got["error"] if "error" in got else ""
    assert got["shape"] == (12, 10, 3) and got["dtype"] == "uint8"
    assert got["bytes"] == pattern.tobytes()
    assert got["valid"] is True and got["writeable"] is False

    # The reader's exit (and its resource tracker, if it started one) must leave the segment.
    assert shm_exists(ref.pool)
    reader = PoolReader()
    try:
        np.testing.assert_array_equal(reader.view(ref), pattern)
    finally:
        reader.close()
    pool.close()
    assert not shm_exists(ref.pool)
    assert shm_names(f"alpr.{run}.") == []


OWNER_SCRIPT = """
import sys, time
from alpr_topo.core.framepool import FramePool, segment_prefix
pool = FramePool(segment_prefix(sys.argv[1], "cam"), "ipc://unused", paths=1, slots=2)
small = pool.allocate((4, 4))   # leased and kept: its segment stays when the next one is made
pool.allocate((64, 64))
print(small[0].pool, pool.name, flush=True)
time.sleep(600)
"""


def test_kill_9_leaves_segments_that_unlink_segments_removes_exactly(run, make_pool) -> None:
    proc = subprocess.Popen([sys.executable, "-c", OWNER_SCRIPT, run], stdout=subprocess.PIPE, text=True)
    try:
        names = proc.stdout.readline().split()
        assert len(names) == 2, "owner process did not start"
        # Neighbours that must survive: this process's pool of the same stage, another stage of
        # the killed pid, and a pid whose digits start with the killed one's.
        own = make_pool("cam")
        own_ref = put_frame(own, 1)
        other_stage = make_pool("camx")
        other_ref = put_frame(other_stage, 1)
        look_alike = FramePool(f"alpr.{run}.cam.{proc.pid}0.", OWNER, paths=1, slots=1)  # `run` unlinks it
        look_ref = put_frame(look_alike, 1)
        assert other_ref.pool.startswith(f"alpr.{run}.camx.")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    prefix = segment_prefix(run, "cam", proc.pid)
    assert shm_names(prefix) == sorted(names)  # nobody cleaned up after the killed owner

    removed = unlink_segments(prefix)
    assert sorted(removed) == sorted(names)
    assert shm_names(prefix) == []
    for survivor in (own_ref.pool, other_ref.pool, look_ref.pool):
        assert shm_exists(survivor), survivor
    assert unlink_segments(prefix) == []  # idempotent
    look_alike.close()


def test_segment_prefix_defaults_to_this_process() -> None:
    assert segment_prefix("r", "s") == f"alpr.r.s.{os.getpid()}."
    assert segment_prefix("r", "s", 42) == "alpr.r.s.42."


NOISE_SCRIPT = """
import multiprocessing, os, sys
import numpy as np
from alpr_topo.core.framepool import FramePool, PoolReader, segment_prefix

def child(ref):
    reader = PoolReader()
    assert int(reader.view(ref)[0, 0]) == 5
    reader.close()

if __name__ == "__main__":
    run = sys.argv[1]
    pool = FramePool(segment_prefix(run, "cam"), "ipc://unused", paths=1, slots=2)
    ref, array = pool.allocate((8, 8))
    array[...] = 5
    pool.publish(ref)
    del array
    reader = PoolReader()
    assert int(reader.view(ref)[0, 0]) == 5
    procs = [multiprocessing.get_context(m).Process(target=child, args=(ref,)) for m in ("spawn", "fork")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0, p.exitcode
    reader.close()
    pool.close()
    left = [n for n in os.listdir("/dev/shm") if n.startswith(f"alpr.{run}.")]
    print("left:", left)
"""


def test_no_resource_tracker_noise(tmp_path: Path, run: str) -> None:
    script = tmp_path / "noise.py"
    script.write_text(NOISE_SCRIPT)
    result = subprocess.run([sys.executable, str(script), run], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no "leaked shared_memory objects" or KeyError from resource_tracker
    assert result.stdout.strip() == "left: []"
