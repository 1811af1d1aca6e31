"""One stage instance: the process the supervisor spawns per stage replica.

Run as ``python -m alpr_topo.core.worker SPEC.json``. Everything happens in one thread: poll the
sockets, process one envelope at a time, report to the supervisor. A stage therefore never needs
locks, and a stuck ``process`` call shows up as missing heartbeats (the supervisor restarts it).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

from .context import StageContext
from .envelope import Envelope, FrameRef
from .framepool import FramePool, PoolReader, StaleFrame, segment_prefix
from .logs import configure_worker_logging, frame_context
from .metrics import Histogram
from .plugins import load_modules, plugin_manager, stage_types
from .reorder import Reorderer
from .stage import Source, Stage
from .taps import Taps
from .transport import GroupSpec, InputPort, OutputPort, readable

HEARTBEAT_S = 0.5


@dataclass
class Counters:
    frames_in: int = 0
    frames_out: int = 0
    errors: int = 0
    stale: int = 0
    batches: int = 0
    batched_frames: int = 0
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=1024))
    e2e_ms: deque = field(default_factory=lambda: deque(maxlen=1024))
    latency_hist: Histogram = field(default_factory=Histogram)  # for /metrics (adds up across processes)
    e2e_hist: Histogram = field(default_factory=Histogram)
    cameras: dict[str, list[int]] = field(default_factory=dict)  # camera -> [frames in, frames out]
    first_out_at: float | None = None  # wall clock of the first and the latest output (throughput over a run)
    last_out_at: float | None = None

    def camera(self, camera_id: str) -> list[int]:
        seen = self.cameras.get(camera_id)
        if seen is None:
            seen = self.cameras[camera_id] = [0, 0]
        return seen

    def percentiles(self, samples: deque) -> tuple[float | None, float | None]:
        if not samples:
            return None, None
        p50, p99 = np.percentile(np.fromiter(samples, dtype=float), [50, 99])
        return round(float(p50), 3), round(float(p99), 3)


class Releaser:
    """Sends lease releases to the owners of frames (PUSH, one socket per owner, never blocks)."""

    def __init__(self, zctx: zmq.Context) -> None:
        self.zctx = zctx
        self.socks: dict[str, zmq.Socket] = {}

    def release(self, ref: FrameRef, count: int) -> None:
        sock = self.socks.get(ref.owner)
        if sock is None:
            sock = self.zctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 1000)
            sock.setsockopt(zmq.SNDHWM, 100000)
            sock.connect(ref.owner)
            self.socks[ref.owner] = sock
        try:
            sock.send(msgpack.packb([ref.pool, ref.slot, ref.generation, count]), zmq.NOBLOCK)
        except zmq.Again:
            pass  # owner gone or swamped: its lease timeout reclaims the slot

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()


class Worker:
    """The event loop of one stage instance."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.name: str = spec["stage"]
        self.paths: int = int(spec.get("paths", 1))
        self.log = logging.getLogger(f"alpr_topo.{self.name}.{spec['replica']}")
        self.zctx = zmq.Context.instance()
        self.poller = zmq.Poller()
        self.counters = Counters()
        self.state = "starting"
        self.finished_sent = False
        self.inbound: deque[tuple[Envelope, Any]] = deque()
        self.remote_pending: list[tuple[Any, FrameRef, int]] = []
        self.stop_requested = False
        self.parent = os.getppid()
        self.drain_started = 0.0
        self.flushed = False

        self.control = self.zctx.socket(zmq.DEALER)
        self.control.setsockopt(zmq.ROUTING_ID, spec["instance"].encode())
        self.control.setsockopt(zmq.LINGER, 2000)
        self.control.connect(spec["control"])
        self.poller.register(self.control, zmq.POLLIN)

        self.reader = PoolReader()
        self.releaser = Releaser(self.zctx)
        self.release_sock: zmq.Socket | None = None
        self.ctx = StageContext(
            name=self.name,
            type_name=spec["type"],
            replica=int(spec["replica"]),
            instance=spec["instance"],
            run=spec["run"],
            log=self.log,
            reader=self.reader,
            make_pool=self._make_pool,
        )

        self.output: OutputPort | None = None
        if spec.get("outputs"):
            groups = {g: GroupSpec(**v) for g, v in spec["outputs"].items()}
            self.output = OutputPort(
                self.zctx, spec["bind"], spec["instance"], spec.get("host", ""), groups,
                queue_limit=int(spec.get("queue_limit", 32)),
                frame_source=lambda ref: memoryview(self.reader.view(ref)).cast("B"),
                on_remote_sent=self._on_remote_sent,
            )
            self.poller.register(self.output.sock, zmq.POLLIN)
        self.input: InputPort | None = None
        if spec.get("inputs"):
            self.input = InputPort(
                self.zctx, spec["inputs"], spec["instance"], self.name, int(spec["replica"]),
                spec.get("host", ""), window=int(spec.get("window", 4)), paused=True,  # see _open_input
            )
            for sock in self.input.sockets:
                self.poller.register(sock, zmq.POLLIN)
        self.reorder: Reorderer | None = Reorderer(**spec["reorder"]) if spec.get("reorder") else None

        load_modules(spec.get("plugins", []))
        cls = stage_types()[spec["type"]]
        self.stage: Stage = cls(cls.Params(**spec.get("params", {})), self.ctx)
        self.batching = callable(getattr(self.stage, "process_batch", None))
        self.taps = Taps(Path(spec["rundir"]) / "taps", self.name, int(spec["replica"]), sink=self.output is None) \
            if not isinstance(self.stage, Source) else None

    # -- set-up and shared memory --------------------------------------------------------------

    def _make_pool(self) -> FramePool:
        pool_spec = self.spec.get("pool", {})
        owner = f"ipc://{self.spec['rundir']}/rel.{self.spec['instance']}"
        self.release_sock = self.zctx.socket(zmq.PULL)
        self.release_sock.bind(owner)
        self.poller.register(self.release_sock, zmq.POLLIN)
        return FramePool(
            segment_prefix(self.spec["run"], self.name),
            owner,
            paths=self.paths,
            slots=int(pool_spec.get("slots", 16)),
            when_full=pool_spec.get("when_full", "wait"),
            lease_timeout_s=float(pool_spec.get("lease_timeout_s", 10.0)),
        )

    # -- main loop -----------------------------------------------------------------------------

    def run(self) -> int:
        self.stage.setup()
        plugin_manager().hook.alpr_topo_stage_started(
            stage_name=self.name, stage=self.stage,
            info={"replica": self.ctx.replica, "instance": self.ctx.instance, "pid": os.getpid()},
        )
        self.state = "paused" if self.spec.get("paused") else "running"
        self._send_control({"t": "ready"})
        next_beat = 0.0
        try:
            while True:
                now = time.monotonic()
                if now >= next_beat:
                    self._emit_from(self.stage.tick, "tick")
                    self._heartbeat()
                    next_beat = now + HEARTBEAT_S
                    if self.taps is not None:
                        self.taps.check_wanted()
                    if os.getppid() != self.parent:
                        self.log.warning("supervisor is gone; stopping")
                        break
                    if self.output is not None:
                        self.output.expire_peers()
                    if self.ctx._pool is not None:
                        self.ctx._pool.expire()
                if self.input is not None and self.input.ping_due():
                    self.input.ping()
                for sock, _ in self.poller.poll(self._poll_timeout_ms()):
                    self._on_readable(sock)
                if self.stop_requested:
                    break
                self._flush_remote_releases()
                self._open_input()
                if self.reorder is not None:
                    self.inbound.extend(self.reorder.poll())
                self._work()
                if self.state == "draining" and self._drained():
                    self.log.info("drained")
                    break
        finally:
            self._shutdown()
        return 0

    def _poll_timeout_ms(self) -> int:
        if self.inbound and self._room():
            return 0
        if isinstance(self.stage, Source) and self.state == "running" and not self.stage.finished and self._can_produce():
            return int(max(0.0, min(0.05, self.stage.wait_s())) * 1000)
        # a source blocked on credits or slots waits like any stage: the credit or the release that
        # frees it arrives on a polled socket (a zero timeout here spun a whole core)
        return 20 if self.reorder is not None and self.reorder.held() else 50

    def _on_readable(self, sock: zmq.Socket) -> None:
        if sock is self.control:
            self._on_control()
        elif self.output is not None and sock is self.output.sock:
            self.output.handle()
        elif sock is self.release_sock:
            self._on_releases()
        elif self.input is not None:
            for env, token in self.input.receive(sock):
                if self.reorder is None:
                    self.inbound.append((env, token))
                    continue
                released = self.reorder.push(env.camera_id, env.frame_id, (env, token))
                if not any(item[0] is env for item in released):
                    # Held for order: credit it now, or this stage could starve itself waiting for
                    # the frame the withheld credit would have brought. The buffer is bounded by
                    # the reorder window, so backpressure still holds.
                    self.input.credit(token)
                    self.reorder.replace(env.camera_id, env.frame_id, (env, None))
                self.inbound.extend(released)

    def _on_control(self) -> None:
        while readable(self.control):
            try:
                msg = msgpack.unpackb(self.control.recv(zmq.NOBLOCK))
            except zmq.Again:
                return
            kind = msg.get("t")
            if kind == "resume" and self.state == "paused":
                self.state = "running"
            elif kind == "drain" and self.state != "draining":
                self.log.info("draining")
                self.state = "draining"
                self.drain_started = time.monotonic()
                if self.input is not None:
                    self.input.leave()
            elif kind == "stop":
                self.stop_requested = True

    def _on_releases(self) -> None:
        assert self.release_sock is not None and self.ctx._pool is not None
        while readable(self.release_sock):
            try:
                pool, slot, generation, count = msgpack.unpackb(self.release_sock.recv(zmq.NOBLOCK))
            except zmq.Again:
                return
            self.ctx._pool.release(pool, slot, generation, count)

    def _open_input(self) -> None:
        """Grant credits upstream once running and every downstream group is connected."""
        if self.input is not None and self.input.paused and self.state == "running":
            if self.output is None or self.output.connected():
                self.input.resume()

    def _room(self) -> bool:
        return self.output is None or self.output.has_room()

    def _can_produce(self) -> bool:
        """A source may make a frame: downstream has credit and its pool a slot (or it drops)."""
        pool = self.ctx._pool
        return self._room() and (pool is None or pool.when_full == "drop" or pool.free_slots() > 0)

    def _work(self) -> None:
        """Process what is queued while downstream has room; let a source make a frame.

        Returns to the loop after a heartbeat interval even with frames still queued: a slow
        stage (a CPU detector at a second per frame) must keep its heartbeats, or the supervisor
        takes it for hung.
        """
        batch_max = int(getattr(self.stage.params, "batch_size", 1) or 1)
        deadline = time.monotonic() + HEARTBEAT_S
        while self.inbound and self._room() and time.monotonic() < deadline:
            if self.batching and len(self.inbound) > 1 and batch_max > 1:
                self._process_batch([self.inbound.popleft() for _ in range(min(batch_max, len(self.inbound)))])
                continue
            env, token = self.inbound.popleft()
            self._process(env, token)
        if not isinstance(self.stage, Source) or self.state != "running":
            return
        if self.stage.finished:
            if not self.finished_sent:
                self.finished_sent = True
                self._send_control({"t": "finished"})
            return
        if self._can_produce():
            t_in = time.monotonic_ns()
            try:
                env = self.stage.produce()
            except Exception:
                self.counters.errors += 1
                self.log.exception("source failed to produce a frame")
                return
            if env is not None:
                self._emit([env], t_in, None)

    def _process(self, env: Envelope, token: Any) -> None:
        t_in = time.monotonic_ns()
        read_before = self.ctx.frames_read
        frame_context(env.camera_id, env.frame_id, env.meta)  # log lines of this call name the frame
        try:
            result = self.stage.process(env)
        except StaleFrame:
            self.counters.stale += 1
            result = None
        except Exception:
            self.counters.errors += 1
            self.log.exception("failed on frame %s/%s", env.camera_id, env.frame_id)
            result = None
        frame_context(None)
        self._complete(env, token, result, t_in, self.ctx.frames_read > read_before)

    def _process_batch(self, items: list[tuple[Envelope, Any]]) -> None:
        """One ``process_batch`` call for what is queued (a detector batching several cameras)."""
        t_in = time.monotonic_ns()
        read_before = self.ctx.frames_read
        envs = [env for env, _ in items]
        try:
            results = list(self.stage.process_batch(envs))  # type: ignore[attr-defined]
            if len(results) != len(envs):
                raise ValueError(f"process_batch returned {len(results)} results for {len(envs)} envelopes")
        except StaleFrame:
            self.counters.stale += len(envs)
            results = [None] * len(envs)
        except Exception:
            self.counters.errors += len(envs)
            self.log.exception("failed on a batch of %d frames", len(envs))
            results = [None] * len(envs)
        self.counters.batches += 1
        self.counters.batched_frames += len(envs)
        read = self.ctx.frames_read > read_before
        for (env, token), result in zip(items, results):
            self._complete(env, token, result, t_in, read)

    def _complete(self, env: Envelope, token: Any, result: Any, t_in: int, frame_read: bool) -> None:
        """Send a processed envelope's outputs on, release its frame, credit its link."""
        in_ref = env.frame if isinstance(env.frame, FrameRef) else None
        outs = [] if result is None else [result] if isinstance(result, Envelope) else list(result)
        if in_ref is not None and frame_read and not self.reader.still_valid(in_ref):
            self.counters.stale += 1  # the frame changed under the stage: its result is void
            outs = []
        self.counters.frames_in += 1
        self.counters.camera(env.camera_id)[0] += 1
        if self.taps is not None:
            self.taps.after(env, outs, self.reader)  # before _emit: the input frame is still ours
        self._emit(outs, t_in, in_ref)
        if self.input is not None and token is not None:
            self.input.credit(token)

    def _emit(self, outs: list[Envelope], t_in: int, in_ref: FrameRef | None) -> None:
        pool = self.ctx._pool
        passed_on = False
        for out in outs:
            ref = out.frame if isinstance(out.frame, FrameRef) else None
            if ref is not None and ref == in_ref:
                if passed_on:
                    self.log.error("a stage may pass its input frame on in one output only; frame dropped from the copy")
                    out.frame = None
                passed_on = True
            elif ref is not None and pool is not None and ref.pool == pool.name:
                pool.publish(ref)
                if self.output is None:
                    pool.discard(ref)
            t_out = time.monotonic_ns()
            out.stamps.append((self.name, t_in, t_out))
            self.counters.latencies_ms.append((t_out - t_in) / 1e6)
            self.counters.latency_hist.observe((t_out - t_in) / 1e9)
            if out.stamps:
                self.counters.e2e_ms.append((t_out - out.stamps[0][1]) / 1e6)
                self.counters.e2e_hist.observe((t_out - out.stamps[0][1]) / 1e9)
            self.counters.frames_out += 1
            self.counters.camera(out.camera_id)[1] += 1
            self.counters.last_out_at = time.time()
            if self.counters.first_out_at is None:
                self.counters.first_out_at = self.counters.last_out_at
            if self.output is not None:
                self.output.put(out)
        if in_ref is not None and (not passed_on or self.output is None):
            self._release(in_ref, self.paths)

    def _release(self, ref: FrameRef, count: int) -> None:
        pool = self.ctx._pool
        if pool is not None and ref.owner == pool.owner:
            pool.release(ref.pool, ref.slot, ref.generation, count)
        else:
            self.releaser.release(ref, count)

    def _on_remote_sent(self, ref: FrameRef, count: int, tracker: Any) -> None:
        """A frame's bytes went to another host zero-copy: release it once the send is done."""
        self.remote_pending.append((tracker, ref, count))
        pool = self.ctx._pool
        if pool is not None and ref.pool == pool.name:
            pool.hold_until_sent(ref, tracker)  # lease expiry must not reuse a slot still being sent

    def _flush_remote_releases(self) -> None:
        if not self.remote_pending:
            return
        waiting = []
        for tracker, ref, count in self.remote_pending:
            if tracker.done:
                self._release(ref, count)
            else:
                waiting.append((tracker, ref, count))
        self.remote_pending = waiting

    def _emit_from(self, method: Any, what: str) -> None:
        """Send what ``tick``/``flush`` return, like the outputs of ``process``."""
        t_in = time.monotonic_ns()
        try:
            result = method()
        except Exception:
            self.counters.errors += 1
            self.log.exception("%s failed", what)
            return
        if result is not None:
            self._emit([result] if isinstance(result, Envelope) else list(result), t_in, None)

    def _drained(self) -> bool:
        if self.input is not None and not self.input.left():
            return False
        if self.inbound or (self.reorder is not None and self.reorder.held()):
            if self.reorder is not None:
                self.inbound.extend(self.reorder.poll())
            return False
        if not self.flushed:
            self.flushed = True  # once: after the last envelope, before the output must be empty
            self._emit_from(self.stage.flush, "flush")
        if self.output is not None:
            self.output.dispatch()
            if self.output.pending():
                return False
        if self.remote_pending:
            return False
        pool = self.ctx._pool
        return pool is None or pool.in_use() == 0

    # -- reporting and exit --------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        c = self.counters
        p50, p99 = c.percentiles(c.latencies_ms)
        e50, e99 = c.percentiles(c.e2e_ms)
        pool = self.ctx._pool
        return {
            "state": self.state,
            "frames_in": c.frames_in,
            "frames_out": c.frames_out,
            "errors": c.errors,
            "stale": c.stale,
            "queue_in": len(self.inbound) + (self.reorder.held() if self.reorder else 0),
            "queue_out": self.output.pending() if self.output else 0,
            "latency_p50_ms": p50,
            "latency_p99_ms": p99,
            "e2e_p50_ms": e50,
            "e2e_p99_ms": e99,
            "received": self.input.received_total if self.input else 0,
            "sent": dict(self.output.sent) if self.output else {},
            "finished": bool(isinstance(self.stage, Source) and self.stage.finished),
            "pool": None if pool is None else {**vars(pool.stats), "in_use": pool.in_use(), "slots": pool.slots},
            "counters": dict(self.ctx.counters),
            "reorder_late": self.reorder.late if self.reorder else 0,
            "batches": c.batches,
            "batched_frames": c.batched_frames,
            "first_out_at": c.first_out_at,
            "last_out_at": c.last_out_at,
            "cameras": {camera: list(seen) for camera, seen in c.cameras.items()},
            "hist": {"latency": c.latency_hist.to_wire(), "e2e": c.e2e_hist.to_wire()},
        }

    def _heartbeat(self) -> None:
        self._send_control({"t": "hb", "stats": self.stats()})

    def _send_control(self, msg: dict[str, Any]) -> None:
        try:
            self.control.send(msgpack.packb(msg), zmq.NOBLOCK)
        except zmq.Again:
            pass

    def _shutdown(self) -> None:
        try:
            self.stage.teardown()
        except Exception:
            self.log.exception("teardown failed")
        if self.output is not None:
            self.output.close()
        if self.input is not None:
            self.input.close()
        self.state = "stopped"
        self._send_control({"t": "exit", "stats": self.stats()})
        if self.ctx._pool is not None:
            self.ctx._pool.close()
        self.reader.close()
        self.releaser.close()
        self.control.close()
        if self.release_sock is not None:
            self.release_sock.close()


def configure_logging(spec: dict[str, Any]) -> None:
    configure_worker_logging(spec)  # text or JSON lines, with the frame being processed (core/logs.py)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as fh:
        spec = json.load(fh)
    configure_logging(spec)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when we stop
    try:
        worker = Worker(spec)
        signal.signal(signal.SIGTERM, lambda *_: setattr(worker, "stop_requested", True))
        return worker.run()
    except Exception:
        logging.getLogger(f"alpr_topo.{spec['stage']}").exception("stage failed")  # into its log file too
        return 1


if __name__ == "__main__":
    sys.exit(main())
