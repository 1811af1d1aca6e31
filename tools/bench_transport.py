"""``alpr-topo bench transport``: one hop of our frame hand-off against the naive ways.

Every method moves the same frames from a producer process to a consumer process on this host:

* ``shm-zmq``: our real path. The producer owns a :class:`FramePool` (``paths=1``), publishes a
  slot and sends the envelope through an :class:`OutputPort` (credit-based ROUTER, ``ipc://``);
  the consumer receives it on an :class:`InputPort`, maps the frame in place with
  :class:`PoolReader`, checks the frame id stamped in its first bytes, sends the lease release
  back with :class:`Releaser` and credits the input, exactly as a stage worker does. The slots
  are filled once; per frame the producer only stamps the id (a source decodes straight into
  its slot, so the frame is already there).
* ``shm-zmq-write``: the same, but the producer copies a full frame into the slot each time
  (what a fresh frame that lives elsewhere costs).
* ``pickle-zmq``: ``pickle.dumps`` of the numpy frame over a plain PUSH/PULL ``ipc://`` socket.
* ``mp-queue``: ``multiprocessing.Queue`` put/get of the numpy frame.

Each method runs in two modes within one producer/consumer pair: *latency* (one frame in flight:
the producer sends the next frame only once the consumer acknowledged the previous one, the lease
release for shm-zmq) gives ``p50_us``/``p99_us``; *throughput* (pipelined, bounded by credits or
queue sizes) gives ``frames_per_s``. One-way latency is the consumer's ``time.monotonic_ns()`` once
it holds the frame and verified its id, minus the producer's ``time.monotonic_ns()`` taken right
before it started handing the frame off (CLOCK_MONOTONIC is shared by all processes on Linux).

The consumer counts every frame id, so each result says whether every frame arrived exactly once
and intact. Child processes and shared-memory segments are cleaned up on every exit path.
"""

from __future__ import annotations

import os
import pickle
import platform
import queue as queue_mod
import secrets
import shutil
import tempfile
import threading
import time
import traceback
from typing import Any, Callable, Iterable

import msgpack
import numpy as np
import zmq

from ..core.envelope import Envelope, FrameRef
from ..core.framepool import FramePool, PoolReader, StaleFrame, segment_prefix, unlink_segments
from ..core.transport import GroupSpec, InputPort, OutputPort
from ..core.worker import Releaser
from ..stages.testing import read_stamp, stamp_frame

METHODS = ("shm-zmq", "pickle-zmq", "mp-queue")
ALL_METHODS = ("shm-zmq", "shm-zmq-write", "pickle-zmq", "mp-queue")
DEFAULT_METHODS = ALL_METHODS

WINDOW = 4  # credits an InputPort grants (the worker default) / queue bound of the baselines
SLOTS = 16  # frame pool slots (the worker default)
SETTLE_S = 0.0003  # latency mode: pause after each acknowledgement (see _settle)
IDLE_TIMEOUT_S = 10.0  # a child gives up after this long without progress

NOTES = (
    "One hop, producer process -> consumer process, same host. p50_us/p99_us: latency mode (one frame in "
    "flight; the next is sent 0.3 ms after the consumer acknowledged the previous one: the lease release for "
    "shm-zmq, an ack message for the baselines), from the producer's monotonic clock right before it starts handing "
    "the frame off (pickle.dumps / Queue.put for the baselines) to the consumer holding "
    "the frame with its stamped id verified. For shm-zmq the clock starts once the frame is in its slot, "
    "right before publish + send (FramePool.allocate happens before a source decodes into the slot; its cost "
    "is reported apart as alloc_p50_us); for shm-zmq-write it starts before allocate + the full-frame copy. "
    "frames_per_s: throughput mode (pipelined: credit window "
    f"{WINDOW} and {SLOTS} pool slots for shm-zmq, queue bound {WINDOW} for the baselines), from the first "
    "frame's send to the last frame's receipt. shm-zmq: the pool slots are filled once and the producer only "
    "stamps the 8-byte frame id per frame (a source decodes straight into its slot), so it measures the "
    "hand-off, not a 6 MB memcpy; shm-zmq-write copies a full frame into the slot per frame (the realistic "
    "cost of a fresh frame that lives elsewhere). pickle-zmq and mp-queue necessarily copy (serialise) the "
    "full frame per hop, since that is what they do. ratios: baseline p50 / shm-zmq p50 and shm-zmq frames/s "
    "/ baseline frames/s, for the largest frame size (higher is better for shm-zmq)."
)

TARGETS = {"p50_us_max": 100.0, "p50_ratio_min": 20.0, "frames_per_s_min": 2000.0}


class BenchError(RuntimeError):
    """A method could not be measured (a child failed or timed out)."""


# -- bookkeeping shared by the consumers ----------------------------------------------------------


class _Tally:
    """What a consumer saw: every frame id counted, latencies per phase."""

    def __init__(self, warmup: int, frames: int) -> None:
        self.warmup = warmup
        self.frames = frames
        self.total = warmup + 2 * frames
        self.counts = np.zeros(self.total, dtype=np.int64)
        self.unknown = 0  # ids outside the expected range
        self.corrupt = 0  # the stamped id did not match the id the message announced
        self.stale = 0  # shm only: the slot was reused under the reader
        self.latency_ns: list[int] = []
        self.loaded_ns: list[int] = []
        self.first_t0: int | None = None
        self.last_t1: int | None = None
        self.received = 0

    def add(self, frame_id: int, stamped: int | None, t0: int, t1: int) -> None:
        self.received += 1
        if stamped != frame_id:
            self.corrupt += 1
        if not 0 <= frame_id < self.total:
            self.unknown += 1
            return
        self.counts[frame_id] += 1
        if frame_id < self.warmup:
            return
        if frame_id < self.warmup + self.frames:
            self.latency_ns.append(t1 - t0)
            return
        self.loaded_ns.append(t1 - t0)
        if self.first_t0 is None or t0 < self.first_t0:
            self.first_t0 = t0
        if self.last_t1 is None or t1 > self.last_t1:
            self.last_t1 = t1

    def done(self) -> bool:
        return self.received >= self.total

    def report(self) -> dict[str, Any]:
        return {
            "expected": self.total,
            "received": self.received,
            "unique": int(np.count_nonzero(self.counts)),
            "missing": int(np.count_nonzero(self.counts == 0)),
            "duplicates": int(np.sum(np.maximum(self.counts - 1, 0))),
            "unknown": self.unknown,
            "corrupt": self.corrupt,
            "stale": self.stale,
            "latency_ns": self.latency_ns,
            "loaded_ns": self.loaded_ns,
            "first_t0": self.first_t0,
            "last_t1": self.last_t1,
        }


def _base_frame(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)


def _phases(cfg: dict[str, Any]) -> tuple[range, range]:
    """Frame ids sent one at a time (warm-up + latency mode), then pipelined (throughput mode)."""
    w, n = cfg["warmup"], cfg["frames"]
    return range(0, w + n), range(w + n, w + 2 * n)


def _settle() -> None:
    """Latency mode, after the consumer acknowledged a frame: let it finish that frame (credit,
    bookkeeping) and go back to waiting, as between the frames of a real stream, so the next
    frame measures the hop and not the tail of the previous one."""
    time.sleep(SETTLE_S)


class _Progress:
    """Raises when nothing happened for ``IDLE_TIMEOUT_S``."""

    def __init__(self, what: str, timeout_s: float) -> None:
        self.what = what
        self.timeout_s = timeout_s
        self.last = time.monotonic()

    def moved(self) -> None:
        self.last = time.monotonic()

    def check(self) -> None:
        if time.monotonic() - self.last > self.timeout_s:
            raise BenchError(f"{self.what}: no progress for {self.timeout_s:.0f} s")


# -- shm-zmq: our path -----------------------------------------------------------------------


def _shm_producer(cfg: dict[str, Any], write: bool) -> dict[str, Any]:
    shape = tuple(cfg["shape"])
    zctx = zmq.Context()
    owner = f"ipc://{cfg['workdir']}/rel"
    release_sock = zctx.socket(zmq.PULL)
    release_sock.setsockopt(zmq.LINGER, 0)
    release_sock.bind(owner)
    pool = FramePool(segment_prefix(cfg["run"], "bench"), owner, paths=1, slots=cfg["slots"])
    out: OutputPort | None = None
    try:
        out = OutputPort(zctx, f"ipc://{cfg['workdir']}/out", "bench-producer.0", "",
                         {"consumer": GroupSpec()}, queue_limit=cfg["window"])
        poller = zmq.Poller()
        poller.register(out.sock, zmq.POLLIN)
        poller.register(release_sock, zmq.POLLIN)
        port = out
        progress = _Progress("shm producer", cfg["idle_timeout_s"])

        def pump(timeout_ms: int) -> None:
            for sock, _ in poller.poll(timeout_ms):
                if sock is port.sock:
                    port.handle()
                else:
                    while True:
                        try:
                            name, slot, generation, count = msgpack.unpackb(release_sock.recv(zmq.NOBLOCK))
                        except zmq.Again:
                            break
                        pool.release(name, slot, generation, count)
                        progress.moved()

        while not any(p.credit > 0 for p in out.peers.values()):  # the consumer is linked
            pump(20)
            progress.check()

        source = _base_frame(shape)
        filled = [pool.allocate(shape) for _ in range(pool.slots)]
        for got in filled:
            assert got is not None
            np.copyto(got[1], source)
        for got in filled:
            assert got is not None
            pool.discard(got[0])
        del filled, got

        alloc_ns: list[int] = []

        def send(frame_id: int) -> None:
            ta = time.monotonic_ns()
            got = pool.allocate(shape)
            assert got is not None  # callers checked free_slots()
            alloc_ns.append(time.monotonic_ns() - ta)
            ref, image = got
            if write:  # the frame lives elsewhere: copying it in is part of handing it off
                np.copyto(image, source)
                stamp_frame(image, frame_id)
                t0 = ta
            else:  # the frame was made in its slot (a source decodes into it); only the id changes
                stamp_frame(image, frame_id)
                t0 = time.monotonic_ns()
            del image
            pool.publish(ref)
            port.put(Envelope(camera_id="bench", frame_id=frame_id, captured_at=0.0, frame=ref, meta={"t0": t0}))

        one_by_one, pipelined = _phases(cfg)
        sent = 0
        for frame_id in one_by_one:
            while pool.free_slots() == 0 or not any(p.credit > 0 for p in out.peers.values()):
                pump(50)  # neither happens after the previous release and credit; be safe
                progress.check()
            send(frame_id)
            sent += 1
            while pool.in_use() or out.pending():  # one in flight: wait for its release
                pump(100)
                progress.check()
            _settle()
            pump(0)  # take the credit that followed the release
        todo = iter(pipelined)
        next_id = next(todo, None)
        while next_id is not None or pool.in_use() or out.pending():
            if next_id is not None and out.has_room() and pool.free_slots() > 0:
                send(next_id)
                sent += 1
                next_id = next(todo, None)
                pump(0)
                continue
            pump(100)
            progress.check()
        return {"sent": sent, "pool": vars(pool.stats), "alloc_ns": alloc_ns[: len(one_by_one)]}
    finally:
        if out is not None:
            out.close()
        release_sock.close()
        # Unlink by name first: SharedMemory.unlink() (inside pool.close()) would also tell
        # Python's resource tracker to forget a segment that FramePool already made it forget,
        # and the tracker prints a KeyError traceback for that. pool.close() still unmaps.
        unlink_segments(segment_prefix(cfg["run"], "bench"))
        pool.close()
        zctx.destroy(linger=0)


def _shm_consumer(cfg: dict[str, Any]) -> dict[str, Any]:
    zctx = zmq.Context()
    tally = _Tally(cfg["warmup"], cfg["frames"])
    inp = InputPort(zctx, [f"ipc://{cfg['workdir']}/out"], "bench-consumer.0", "consumer", 0, "",
                    window=cfg["window"])
    reader = PoolReader()
    releaser = Releaser(zctx)
    try:
        poller = zmq.Poller()
        for sock in inp.sockets:
            poller.register(sock, zmq.POLLIN)
        progress = _Progress("shm consumer", cfg["idle_timeout_s"])
        while not tally.done():
            if inp.ping_due():
                inp.ping()
            events = poller.poll(100)
            if not events:
                progress.check()
                continue
            for sock, _ in events:
                for env, token in inp.receive(sock):
                    ref = env.frame
                    assert isinstance(ref, FrameRef)
                    stamped: int | None
                    try:
                        image = reader.view(ref)
                        stamped = read_stamp(image)
                        t1 = time.monotonic_ns()
                        del image
                        if not reader.still_valid(ref):
                            tally.stale += 1
                            stamped = None
                    except StaleFrame:
                        t1 = time.monotonic_ns()
                        tally.stale += 1
                        stamped = None
                    tally.add(env.frame_id, stamped, int(env.meta["t0"]), t1)
                    progress.moved()
                    releaser.release(ref, 1)
                    inp.credit(token)
        return tally.report()
    finally:
        inp.close()
        reader.close()
        releaser.close()  # lingers until the last releases are out
        zctx.term()


# -- pickle-zmq baseline ----------------------------------------------------------------------


def _pickle_producer(cfg: dict[str, Any]) -> dict[str, Any]:
    shape = tuple(cfg["shape"])
    zctx = zmq.Context()
    push = zctx.socket(zmq.PUSH)
    acks = zctx.socket(zmq.PULL)
    try:
        for sock in (push, acks):
            sock.setsockopt(zmq.LINGER, 0)
        push.setsockopt(zmq.SNDHWM, cfg["window"])
        acks.setsockopt(zmq.RCVHWM, 0)
        push.bind(f"ipc://{cfg['workdir']}/pickle")
        acks.bind(f"ipc://{cfg['workdir']}/pickle-ack")
        progress = _Progress("pickle-zmq producer", cfg["idle_timeout_s"])
        while not acks.poll(100):  # the consumer says hello once connected
            progress.check()
        acks.recv()
        frame = _base_frame(shape)

        def send(frame_id: int) -> None:
            t0 = time.monotonic_ns()
            stamp_frame(frame, frame_id)
            push.send(pickle.dumps((frame_id, t0, frame), protocol=pickle.HIGHEST_PROTOCOL))

        def wait_acks(n: int) -> None:
            for _ in range(n):
                while not acks.poll(100):
                    progress.check()
                acks.recv()
                progress.moved()

        one_by_one, pipelined = _phases(cfg)
        sent = 0
        for frame_id in one_by_one:
            send(frame_id)
            sent += 1
            wait_acks(1)
            _settle()
        for frame_id in pipelined:
            send(frame_id)  # blocks on the high-water mark: backpressure
            sent += 1
        wait_acks(len(pipelined))
        return {"sent": sent}
    finally:
        push.close(linger=0)
        acks.close(linger=0)
        zctx.destroy(linger=0)


def _pickle_consumer(cfg: dict[str, Any]) -> dict[str, Any]:
    zctx = zmq.Context()
    tally = _Tally(cfg["warmup"], cfg["frames"])
    pull = zctx.socket(zmq.PULL)
    ack = zctx.socket(zmq.PUSH)
    try:
        pull.setsockopt(zmq.RCVHWM, cfg["window"])
        pull.setsockopt(zmq.LINGER, 0)
        ack.setsockopt(zmq.LINGER, 2000)
        ack.setsockopt(zmq.SNDHWM, 0)
        pull.connect(f"ipc://{cfg['workdir']}/pickle")
        ack.connect(f"ipc://{cfg['workdir']}/pickle-ack")
        ack.send(b"hello")
        progress = _Progress("pickle-zmq consumer", cfg["idle_timeout_s"])
        while not tally.done():
            if not pull.poll(100):
                progress.check()
                continue
            frame_id, t0, image = pickle.loads(pull.recv())
            stamped = read_stamp(image)
            t1 = time.monotonic_ns()
            del image
            tally.add(frame_id, stamped, t0, t1)
            progress.moved()
            ack.send(b"k")
        return tally.report()
    finally:
        pull.close(linger=0)
        ack.close()
        zctx.term()


# -- mp-queue baseline ------------------------------------------------------------------------


def _queue_producer(cfg: dict[str, Any], data_q: Any, ack_q: Any) -> dict[str, Any]:
    shape = tuple(cfg["shape"])
    progress = _Progress("mp-queue producer", cfg["idle_timeout_s"])

    def get_ack() -> None:
        while True:
            try:
                ack_q.get(timeout=0.1)
                progress.moved()
                return
            except queue_mod.Empty:
                progress.check()

    get_ack()  # the consumer is up
    # Queue.put pickles later, in a feeder thread: each in-flight frame needs its own array. The
    # queue holds at most ``window`` unconsumed frames, so a ring of window + 2 is never reused early.
    base = _base_frame(shape)
    ring = [base.copy() for _ in range(cfg["window"] + 2)]

    def send(frame_id: int) -> None:
        t0 = time.monotonic_ns()
        frame = ring[frame_id % len(ring)]
        stamp_frame(frame, frame_id)
        data_q.put((frame_id, t0, frame))

    one_by_one, pipelined = _phases(cfg)
    sent = 0
    for frame_id in one_by_one:
        send(frame_id)
        sent += 1
        get_ack()
        _settle()
    for frame_id in pipelined:
        send(frame_id)  # blocks while the queue holds ``window`` frames: backpressure
        sent += 1
    for _ in pipelined:
        get_ack()
    return {"sent": sent}


def _queue_consumer(cfg: dict[str, Any], data_q: Any, ack_q: Any) -> dict[str, Any]:
    tally = _Tally(cfg["warmup"], cfg["frames"])
    progress = _Progress("mp-queue consumer", cfg["idle_timeout_s"])
    ack_q.put(-1)  # hello
    while not tally.done():
        try:
            frame_id, t0, image = data_q.get(timeout=0.1)
        except queue_mod.Empty:
            progress.check()
            continue
        stamped = read_stamp(image)
        t1 = time.monotonic_ns()
        del image
        tally.add(frame_id, stamped, t0, t1)
        progress.moved()
        ack_q.put(frame_id)
    return tally.report()


# -- process management -----------------------------------------------------------------------


def _child(role: str, method: str, cfg: dict[str, Any], results: Any, data_q: Any, ack_q: Any) -> None:
    """Entry point of a producer or consumer process; reports through ``results``."""
    try:
        if method in ("shm-zmq", "shm-zmq-write"):
            out = _shm_producer(cfg, method == "shm-zmq-write") if role == "producer" else _shm_consumer(cfg)
        elif method == "pickle-zmq":
            out = _pickle_producer(cfg) if role == "producer" else _pickle_consumer(cfg)
        elif method == "mp-queue":
            out = _queue_producer(cfg, data_q, ack_q) if role == "producer" else _queue_consumer(cfg, data_q, ack_q)
        else:
            raise BenchError(f"unknown method {method!r}")
        results.put((role, "ok", out))
    except BaseException:
        results.put((role, "error", traceback.format_exc()))


def _start_method(requested: str | None) -> str:
    import multiprocessing

    if requested:
        return requested
    # fork starts in milliseconds; it is only safe from a single-threaded parent.
    if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
        return "fork"
    return "spawn"


def _stop(procs: Iterable[Any], grace_s: float) -> None:
    """Wait ``grace_s`` for each child to exit, then terminate it, then kill it."""
    for p in procs:
        if p.pid is None:
            continue
        p.join(timeout=grace_s)
        if p.is_alive():
            p.terminate()
            p.join(timeout=2)
        if p.is_alive():
            p.kill()
            p.join(timeout=2)


def _measure(method: str, shape: tuple[int, int, int], frames: int, warmup: int, mp_ctx: Any,
             timeout_s: float) -> dict[str, Any]:
    """Run one producer/consumer pair for ``method``; returns the merged raw reports."""
    run_id = f"bt{os.getpid()}{secrets.token_hex(3)}"
    workdir = tempfile.mkdtemp(prefix="alpr-bt-")
    cfg = {
        "shape": list(shape), "frames": frames, "warmup": warmup, "window": WINDOW, "slots": SLOTS,
        "workdir": workdir, "run": run_id, "idle_timeout_s": IDLE_TIMEOUT_S,
    }
    results = mp_ctx.Queue()
    data_q = ack_q = None
    if method == "mp-queue":
        data_q, ack_q = mp_ctx.Queue(maxsize=WINDOW), mp_ctx.Queue()
    procs = [
        mp_ctx.Process(target=_child, args=(role, method, cfg, results, data_q, ack_q),
                       name=f"bench-{method}-{role}", daemon=True)
        for role in ("consumer", "producer")
    ]
    leaked: list[str] = []
    try:
        for p in procs:
            p.start()
        got: dict[str, Any] = {}
        deadline = time.monotonic() + timeout_s
        dead_since: float | None = None
        while len(got) < 2:
            if time.monotonic() > deadline:
                raise BenchError(f"{method}: no result within {timeout_s:.0f} s")
            try:
                role, status, payload = results.get(timeout=0.2)
            except queue_mod.Empty:
                if any(p.exitcode is not None and p.name.rsplit("-", 1)[1] not in got for p in procs):
                    dead_since = dead_since or time.monotonic()
                    if time.monotonic() - dead_since > 2.0:
                        codes = {p.name: p.exitcode for p in procs}
                        raise BenchError(f"{method}: a child exited without a result {codes}")
                continue
            if status != "ok":
                raise BenchError(f"{method} {role} failed:\n{payload}")
            got[role] = payload
        _stop(procs, grace_s=5.0)  # both reported: they are exiting on their own
        return {**got, "leaked_segments": leaked}
    finally:
        _stop(procs, grace_s=0.2)  # no-op after a clean run; on error, do not wait for a stuck child
        for q in (results, data_q, ack_q):
            if q is not None:
                q.cancel_join_thread()
                q.close()
        leaked.extend(unlink_segments(f"alpr.{run_id}."))
        shutil.rmtree(workdir, ignore_errors=True)


def _summarise(method: str, shape: tuple[int, int, int], frames: int, raw: dict[str, Any]) -> dict[str, Any]:
    cons, prod = raw["consumer"], raw["producer"]
    lat = np.asarray(cons["latency_ns"], dtype=np.float64) / 1e3
    loaded = np.asarray(cons["loaded_ns"], dtype=np.float64) / 1e3
    p50, p99 = (np.percentile(lat, [50, 99]) if lat.size else (float("nan"), float("nan")))
    l50, l99 = (np.percentile(loaded, [50, 99]) if loaded.size else (float("nan"), float("nan")))
    span = (cons["last_t1"] - cons["first_t0"]) if cons["first_t0"] is not None else 0
    fps = len(cons["loaded_ns"]) / (span / 1e9) if span > 0 else float("nan")
    exactly_once = (cons["missing"] == 0 and cons["duplicates"] == 0 and cons["unknown"] == 0
                    and cons["corrupt"] == 0 and cons["stale"] == 0 and prod["sent"] == cons["expected"])
    entry = {
        "method": method,
        "frame_bytes": int(np.prod(shape)),
        "shape": list(shape),
        "p50_us": round(float(p50), 1),
        "p99_us": round(float(p99), 1),
        "frames_per_s": round(float(fps), 1),
        "mean_us": round(float(lat.mean()), 1) if lat.size else None,
        "max_us": round(float(lat.max()), 1) if lat.size else None,
        "loaded_p50_us": round(float(l50), 1),
        "loaded_p99_us": round(float(l99), 1),
        "frames": frames,
        "sent": prod["sent"],
        "received": cons["received"],
        "unique": cons["unique"],
        "missing": cons["missing"],
        "duplicates": cons["duplicates"],
        "corrupt": cons["corrupt"] + cons["unknown"],
        "stale": cons["stale"],
        "exactly_once": bool(exactly_once),
        "leaked_segments": len(raw["leaked_segments"]),
    }
    if "pool" in prod:
        entry["pool"] = prod["pool"]
    if prod.get("alloc_ns"):
        entry["alloc_p50_us"] = round(float(np.percentile(np.asarray(prod["alloc_ns"]) / 1e3, 50)), 1)
    return entry


def _ratios(results: list[dict[str, Any]]) -> dict[str, Any]:
    if not results:
        return {}
    largest = max(r["frame_bytes"] for r in results)
    by_method = {r["method"]: r for r in results if r["frame_bytes"] == largest}
    ours = by_method.get("shm-zmq")
    ratios: dict[str, Any] = {"frame_bytes": largest}
    if ours is None:
        return ratios
    for name in ("pickle-zmq", "mp-queue"):
        other = by_method.get(name)
        if other is None:
            continue
        if ours["p50_us"] > 0:
            ratios[f"p50_vs_{name}"] = round(other["p50_us"] / ours["p50_us"], 1)
        if other["frames_per_s"] > 0:
            ratios[f"fps_vs_{name}"] = round(ours["frames_per_s"] / other["frames_per_s"], 1)
    return ratios


def _targets(results: list[dict[str, Any]], ratios: dict[str, Any]) -> dict[str, Any]:
    ours = [r for r in results if r["method"] == "shm-zmq"]
    if not ours:
        return {}
    worst_p50 = max(r["p50_us"] for r in ours)
    worst_fps = min(r["frames_per_s"] for r in ours)
    vs = [v for k, v in ratios.items() if k.startswith("p50_vs_")]
    out: dict[str, Any] = {
        "p50_us_max": TARGETS["p50_us_max"], "p50_us_worst": worst_p50,
        "p50_met": worst_p50 <= TARGETS["p50_us_max"],
        "frames_per_s_min": TARGETS["frames_per_s_min"], "frames_per_s_worst": worst_fps,
        "frames_per_s_met": worst_fps >= TARGETS["frames_per_s_min"],
    }
    if vs:
        out.update({"p50_ratio_min": TARGETS["p50_ratio_min"], "p50_ratio_worst": min(vs),
                    "p50_ratio_met": min(vs) >= TARGETS["p50_ratio_min"]})
    return out


def run(
    sizes: list[tuple[int, int, int]] | None = None,
    frames: int = 300,
    warmup: int = 20,
    methods: Iterable[str] = DEFAULT_METHODS,
    progress: Callable[[str], None] | None = None,
    start_method: str | None = None,
) -> dict[str, Any]:
    """Measure every method at every frame size (``(height, width, channels)``, uint8).

    Returns ``{"results": [...], "ratios": {...}, "targets": {...}, "notes": str, "host": {...}}``;
    each result holds ``method, frame_bytes, p50_us, p99_us, frames_per_s`` (the contract) and the
    consumer's accounting (``exactly_once``, ``missing``, ``duplicates``, ``corrupt``, ...).
    """
    import multiprocessing

    sizes = [tuple(int(v) for v in s) for s in (sizes or [(1080, 1920, 3)])]  # type: ignore[misc]
    methods = list(methods)
    for m in methods:
        if m not in ALL_METHODS:
            raise ValueError(f"unknown method {m!r}; expected one of {', '.join(ALL_METHODS)}")
    if frames < 1 or warmup < 0:
        raise ValueError("frames must be >= 1 and warmup >= 0")
    say = progress or (lambda _msg: None)
    how = _start_method(start_method)
    mp_ctx = multiprocessing.get_context(how)
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    for shape in sizes:
        nbytes = int(np.prod(shape))
        label = "x".join(str(v) for v in (shape[1], shape[0], *shape[2:]))
        for method in methods:
            say(f"bench transport: {method} {label} ({nbytes} B), {warmup} warm-up + {frames} one-by-one "
                f"+ {frames} pipelined frames")
            timeout_s = 30.0 + (warmup + 2 * frames) * max(0.01, nbytes / 5e7)
            raw = _measure(method, shape, frames, warmup, mp_ctx, timeout_s)  # type: ignore[arg-type]
            entry = _summarise(method, shape, frames, raw)  # type: ignore[arg-type]
            results.append(entry)
            say(f"bench transport: {method} {label}: p50 {entry['p50_us']} us, p99 {entry['p99_us']} us, "
                f"{entry['frames_per_s']} frames/s, exactly once: {entry['exactly_once']}")
    ratios = _ratios(results)
    return {
        "results": results,
        "ratios": ratios,
        "targets": _targets(results, ratios),
        "notes": NOTES,
        "host": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "pyzmq": zmq.__version__,
            "libzmq": zmq.zmq_version(),
            "numpy": np.__version__,
            "start_method": how,
        },
        "elapsed_s": round(time.monotonic() - started, 1),
    }


def main_text(result: dict[str, Any]) -> str:
    """A table for people: one line per method and frame size, then the ratios and targets."""
    head = f"{'method':<15} {'frame':>14} {'bytes':>10} {'p50 us':>9} {'p99 us':>9} {'loaded p50':>11} " \
           f"{'frames/s':>10}  exactly once"
    lines = [head, "-" * len(head)]
    for r in result.get("results", []):
        shape = r.get("shape") or []
        frame = "x".join(str(v) for v in (shape[1], shape[0], *shape[2:])) if len(shape) >= 2 else "?"
        once = "yes" if r.get("exactly_once") else (
            f"NO (missing {r.get('missing')}, dup {r.get('duplicates')}, corrupt {r.get('corrupt')}, "
            f"stale {r.get('stale')})")
        lines.append(f"{r['method']:<15} {frame:>14} {r['frame_bytes']:>10} {r['p50_us']:>9.1f} "
                     f"{r['p99_us']:>9.1f} {r.get('loaded_p50_us', float('nan')):>11.1f} "
                     f"{r['frames_per_s']:>10.1f}  {once}")
    ratios = result.get("ratios") or {}
    if len(ratios) > 1:
        lines.append("")
        parts = [f"{k.replace('_vs_', ' vs ')} {v}x" for k, v in ratios.items() if k != "frame_bytes"]
        lines.append(f"shm-zmq at {ratios['frame_bytes']} B: " + ", ".join(parts) +
                     " (p50: baseline/shm-zmq, fps: shm-zmq/baseline)")
    targets = result.get("targets") or {}
    if targets:
        checks = [
            f"p50 <= {targets['p50_us_max']:.0f} us: {'met' if targets['p50_met'] else 'MISSED'} "
            f"(worst {targets['p50_us_worst']})",
            f">= {targets['frames_per_s_min']:.0f} frames/s: {'met' if targets['frames_per_s_met'] else 'MISSED'} "
            f"(worst {targets['frames_per_s_worst']})",
        ]
        if "p50_ratio_met" in targets:
            checks.append(f"p50 >= {targets['p50_ratio_min']:.0f}x lower than baselines: "
                          f"{'met' if targets['p50_ratio_met'] else 'MISSED'} (worst {targets['p50_ratio_worst']}x)")
        lines.append("targets: " + "; ".join(checks))
    host = result.get("host") or {}
    if host:
        lines.append(f"host: {host.get('cpus')} cpus, python {host.get('python')}, libzmq {host.get('libzmq')}, "
                     f"start method {host.get('start_method')}")
    if result.get("notes"):
        lines.append("")
        lines.append("notes: " + result["notes"])
    return "\n".join(lines)


def parse_size(text: str) -> tuple[int, int, int]:
    """``"1920x1080"`` (width x height, 3 channels) or ``"1920x1080x1"`` -> ``(height, width, channels)``."""
    try:
        values = [int(v) for v in text.lower().replace("*", "x").split("x")]
    except ValueError:
        values = []
    if len(values) not in (2, 3) or min(values) < 1:
        raise ValueError(f"frame size {text!r}: expected WIDTHxHEIGHT or WIDTHxHEIGHTxCHANNELS, e.g. 1920x1080")
    width, height = values[0], values[1]
    channels = values[2] if len(values) == 3 else 3
    return (height, width, channels)


def main(argv: list[str] | None = None) -> int:
    """``python -m alpr_topo.tools.bench_transport [--json] [--frames N] [--size WxH ...]``."""
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(prog="bench transport", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--frames", type=int, default=300, help="frames per mode and method")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up frames, not measured")
    parser.add_argument("--size", action="append", type=parse_size, help="WIDTHxHEIGHT, repeatable (1920x1080)")
    parser.add_argument("--method", action="append", choices=ALL_METHODS, help="repeatable (default: all)")
    args = parser.parse_args(argv)
    out = run(sizes=args.size, frames=args.frames, warmup=args.warmup, methods=args.method or DEFAULT_METHODS,
              progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(json.dumps(out, indent=2) if args.json else main_text(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
