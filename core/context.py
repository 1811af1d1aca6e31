"""What a stage instance may use from the runtime: its identity, frames, a logger and counters."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .envelope import Envelope, FrameRef, InlineFrame
from .framepool import FramePool, PoolReader


@dataclass
class StageContext:
    """Handed to every stage. Stage code never touches sockets or shared memory directly."""

    name: str
    type_name: str
    replica: int
    instance: str
    run: str
    log: logging.Logger
    reader: PoolReader
    make_pool: Callable[[], FramePool]
    #: Custom counters a stage wants on the status page and in /metrics (name -> value).
    counters: dict[str, float] = field(default_factory=dict)
    _pool: FramePool | None = None
    frames_read: int = 0

    @property
    def pool(self) -> FramePool:
        """This stage's own frame pool, created on first use (only producers need one)."""
        if self._pool is None:
            self._pool = self.make_pool()
        return self._pool

    def frame(self, env: Envelope) -> np.ndarray:
        """The envelope's frame as a read-only array, in place (no copy).

        Raises :class:`~alpr_topo.core.framepool.StaleFrame` if the slot was reused; the
        runtime then drops the envelope and counts it.
        """
        if env.frame is None:
            raise ValueError(f"envelope {env.camera_id}/{env.frame_id} carries no frame")
        self.frames_read += 1
        if isinstance(env.frame, InlineFrame):
            array = np.frombuffer(env.frame.data, dtype=env.frame.dtype).reshape(env.frame.shape)
            return array
        return self.reader.view(env.frame)

    def new_frame(self, shape: tuple[int, ...], dtype: str = "uint8") -> tuple[FrameRef, np.ndarray] | None:
        """A writable slot of this stage's pool. Write the image into the array, put the ref in
        the envelope you return; the runtime publishes it when the envelope leaves.

        Returns None when every slot is still in use and the pool's policy is to drop (live
        cameras): the drop is counted, and the stage should skip this frame.
        """
        return self.pool.allocate(tuple(shape), dtype)

    def count(self, name: str, value: float = 1.0) -> None:
        """Add to a custom counter."""
        self.counters[name] = self.counters.get(name, 0.0) + value
