"""Test helpers for plugin authors: run one stage in-process, with real shared-memory frames.

A plugin's unit tests should not need a supervisor, sockets or a topology file, but they should
see frames the way a stage sees them in a graph: read-only views into a shared-memory pool,
checked for reuse, with the envelope crossing a msgpack round trip between stages. The
:class:`StageHarness` plays both neighbours of the stage under test::

    from alpr_topo.core.testing import StageHarness

    def test_drops_dark_frames():
        with StageHarness("example.brightness", {"min_brightness": 50}) as h:
            assert h.process(h.frame_envelope(np.zeros((48, 64, 3), np.uint8))) == []
            assert h.counters["dark_dropped"] == 1

Upstream, :meth:`StageHarness.frame_envelope` copies an image into a slot of a pool the harness
owns and publishes it, as a producing stage would. Downstream, the harness keeps the frames of
recent outputs readable (:meth:`StageHarness.frame`) and releases the oldest ones when a pool
runs out of slots, as a sink would; reading a released frame raises
:class:`~alpr_topo.core.framepool.StaleFrame`, exactly as in a running graph.

Like the runtime, the harness releases an input frame after ``process`` unless the stage passed
it on, publishes frames the stage made with ``ctx.new_frame``, and adds a ``stamps`` entry per
output. Unlike the runtime it lets exceptions from the stage propagate, so a test sees them.
"""

from __future__ import annotations

import difflib
import logging
import os
import time
import uuid
from collections import deque
from typing import Any, Sequence

import numpy as np

from .context import StageContext
from .envelope import Envelope, FrameRef, InlineFrame, decode, encode
from .framepool import SHM_DIR, FramePool, PoolReader, segment_prefix, unlink_segments
from .stage import Source, Stage

__all__ = ["HarnessError", "StageHarness"]


class HarnessError(AssertionError):
    """The stage did something the runtime would reject or punish (bad return value,
    an envelope that cannot cross ZeroMQ, one frame passed on twice, a source that stalls)."""


def resolve_stage_type(stage_type: str | type[Stage]) -> type[Stage]:
    """A registered stage class by name (with the closest names on a typo), or the class itself.

    Passing the class lets a plugin test its stage before the package is installed.
    """
    if isinstance(stage_type, type):
        if not issubclass(stage_type, Stage):
            raise TypeError(f"{stage_type!r} is not a subclass of alpr_topo.core.stage.Stage")
        return stage_type
    from .plugins import stage_types

    known = stage_types()
    if stage_type not in known:
        close = difflib.get_close_matches(stage_type, list(known), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(known)}"
        raise KeyError(f"unknown stage type {stage_type!r}{hint}")
    return known[stage_type]


class StageHarness:
    """Run one stage in this process: ``setup`` on enter, ``teardown`` and cleanup on exit.

    ``params`` are validated by the stage's ``Params`` model, so a bad value raises the same
    ``pydantic.ValidationError`` that ``alpr-topo validate`` reports. Every harness has its own
    run name (a uuid), so tests may run in parallel without their segments colliding.

    ``slots`` is the size of each pool the harness creates (its input pool and the stage's own);
    ``roundtrip`` sends every output through msgpack as the transport would, so values that
    cannot cross a process boundary (numpy scalars, sets, objects) fail in the unit test.
    """

    def __init__(
        self,
        stage_type: str | type[Stage],
        params: dict[str, Any] | None = None,
        name: str = "under_test",
        *,
        slots: int = 16,
        roundtrip: bool = True,
    ) -> None:
        self.cls = resolve_stage_type(stage_type)
        self.params = self.cls.Params(**(params or {}))  # raises pydantic.ValidationError
        self.name = name
        self.run = f"test-{uuid.uuid4().hex[:12]}"
        self.slots = slots
        self.roundtrip = roundtrip
        self.reader = PoolReader()  # the harness's own view, so ctx.frames_read counts only the stage
        self._pools: dict[str, FramePool] = {}  # owner endpoint -> pool the harness owns
        self._held: deque[FrameRef] = deque()  # frames of outputs, oldest first
        self._input_pool = self._new_pool("_input")
        self.ctx = StageContext(
            name=name,
            type_name=self.cls.type_name,
            replica=0,
            instance=f"{name}.0",
            run=self.run,
            log=logging.getLogger(f"alpr_topo.test.{name}"),
            reader=PoolReader(),
            make_pool=lambda: self._new_pool(name),
        )
        self.stage: Stage = self.cls(self.params, self.ctx)
        self._started = False
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> "StageHarness":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Call the stage's ``setup`` (done by ``with``; call it yourself without one)."""
        if not self._started:
            self.stage.setup()
            self._started = True

    def close(self) -> None:
        """``teardown`` the stage, then unmap and unlink every segment, even if teardown fails."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._started:
                self.stage.teardown()
        finally:
            self.ctx.reader.close()
            self.reader.close()
            for pool in self._pools.values():
                pool.close()
            self._held.clear()
            unlink_segments(f"alpr.{self.run}.")  # anything a misbehaving stage left behind

    # -- what a test drives --------------------------------------------------------------------

    def frame_envelope(
        self, image: np.ndarray, camera_id: str = "test", frame_id: int = 0, **fields: Any
    ) -> Envelope:
        """An envelope whose frame is a copy of ``image`` in a published shared-memory slot.

        ``fields`` are further :class:`Envelope` fields (``detections``, ``meta``, ...).
        """
        image = np.ascontiguousarray(image)
        self._make_room(self._input_pool)
        slot = self._input_pool.allocate(image.shape, str(image.dtype))
        if slot is None:
            raise HarnessError(
                f"all {self.slots} input slots hold frames that were never processed; "
                "process them first or pass a larger slots="
            )
        ref, array = slot
        np.copyto(array, image)
        self._input_pool.publish(ref)
        return Envelope(camera_id=camera_id, frame_id=frame_id, frame=ref, **fields)

    def process(self, env: Envelope) -> list[Envelope]:
        """Call ``stage.process(env)`` and return its outputs as a list (None -> [])."""
        self._require_started()
        if self.cls.is_source:
            raise HarnessError(f"{self.cls.type_name} is a source: use run_source()")
        if self.ctx._pool is not None:
            self._make_room(self.ctx._pool)
        in_ref = env.frame if isinstance(env.frame, FrameRef) else None
        t_in = time.monotonic_ns()
        result = self.stage.process(env)
        return self._emit(self._as_list(result), t_in, in_ref)

    def run_source(self, max_frames: int, timeout_s: float = 30.0) -> list[Envelope]:
        """Call ``produce`` until ``max_frames`` envelopes came out or the source is ``finished``.

        Sleeps ``wait_s()`` between calls like the runtime does; raises :class:`HarnessError`
        when no envelope comes for ``timeout_s`` seconds (a source that stalls).
        """
        self._require_started()
        stage = self.stage
        if not isinstance(stage, Source):
            raise HarnessError(f"{self.cls.type_name} is not a Source: use process()")
        outs: list[Envelope] = []
        deadline = time.monotonic() + timeout_s
        while len(outs) < max_frames and not stage.finished:
            if self.ctx._pool is not None:
                self._make_room(self.ctx._pool)
            t_in = time.monotonic_ns()
            env = stage.produce()
            if env is not None:
                outs.extend(self._emit([env], t_in, None))
                deadline = time.monotonic() + timeout_s
                continue
            if time.monotonic() > deadline:
                raise HarnessError(f"{self.cls.type_name} produced nothing for {timeout_s}s")
            time.sleep(min(max(stage.wait_s(), 0.0005), 0.05))
        return outs

    def frame(self, env: Envelope) -> np.ndarray:
        """The (read-only) frame of an envelope, e.g. one that ``process`` returned."""
        if isinstance(env.frame, FrameRef):
            return self.reader.view(env.frame)
        if isinstance(env.frame, InlineFrame):
            return np.frombuffer(env.frame.data, dtype=env.frame.dtype).reshape(env.frame.shape)
        raise ValueError(f"envelope {env.camera_id}/{env.frame_id} carries no frame")

    @property
    def counters(self) -> dict[str, float]:
        """The stage's custom counters (``ctx.count``), as the status page would show them."""
        return self.ctx.counters

    def segments(self) -> list[str]:
        """Names of this harness's segments in ``/dev/shm`` (empty after ``close``)."""
        try:
            return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(f"alpr.{self.run}."))
        except FileNotFoundError:
            return []

    # -- internals -----------------------------------------------------------------------------

    def _new_pool(self, stage: str) -> FramePool:
        owner = f"harness://{self.run}/{stage}"
        pool = FramePool(segment_prefix(self.run, stage), owner, paths=1, slots=self.slots)
        self._pools[owner] = pool
        return pool

    def _require_started(self) -> None:
        if self._closed:
            raise HarnessError("the harness is closed")
        if not self._started:
            raise HarnessError("use `with StageHarness(...) as h:` or call h.start() first")

    def _as_list(self, result: Envelope | Sequence[Envelope] | None) -> list[Envelope]:
        if result is None:
            return []
        outs = [result] if isinstance(result, Envelope) else list(result)
        for out in outs:
            if not isinstance(out, Envelope):
                raise HarnessError(f"{self.cls.type_name}.process returned {type(out).__name__}, not an Envelope")
        return outs

    def _emit(self, outs: list[Envelope], t_in: int, in_ref: FrameRef | None) -> list[Envelope]:
        """What the worker does with outputs: publish new frames, stamp, release the input."""
        passed_on = False
        result = []
        for out in outs:
            ref = out.frame if isinstance(out.frame, FrameRef) else None
            if ref is not None and ref == in_ref:
                if passed_on:
                    raise HarnessError("a stage may pass its input frame on in one output only")
                passed_on = True
                self._held.append(ref)
            elif ref is not None and self.ctx._pool is not None and ref.owner == self.ctx._pool.owner:
                self.ctx._pool.publish(ref)  # made with ctx.new_frame: readable from now on
                self._held.append(ref)
            out.stamps.append((self.name, t_in, time.monotonic_ns()))
            result.append(self._wire(out) if self.roundtrip else out)
        if in_ref is not None and not passed_on:
            self._release(in_ref)
        return result

    def _wire(self, env: Envelope) -> Envelope:
        try:
            parts = encode(env)
        except Exception as exc:  # msgpack raises TypeError/ValueError/OverflowError
            raise HarnessError(
                f"envelope {env.camera_id}/{env.frame_id} cannot cross to the next stage: {exc} "
                "(use plain int/float/str/list/dict values; convert numpy scalars with float()/int())"
            ) from exc
        return decode(parts)

    def _release(self, ref: FrameRef) -> None:
        pool = self._pools.get(ref.owner)
        if pool is not None:
            pool.release(ref.pool, ref.slot, ref.generation)

    def _make_room(self, pool: FramePool) -> None:
        """Release the oldest output frames of ``pool`` until it has a free slot (a sink's job)."""
        while pool.free_slots() == 0:
            oldest = next((r for r in self._held if self._pools.get(r.owner) is pool), None)
            if oldest is None:
                return
            self._held.remove(oldest)
            self._release(oldest)
