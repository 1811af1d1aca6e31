"""Per-camera frame order for stages that need it (a tracker) when upstream has replicas."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Generic, TypeVar

T = TypeVar("T")


class Reorderer(Generic[T]):
    """Releases items of each camera in frame-id order.

    Frame ids can have gaps (a live source dropped a frame, a filter stage dropped one), so an
    item waits for its predecessors at most ``max_wait_s`` or until ``window`` items of that
    camera are held; then the oldest held items go out in order and the gap is skipped.
    Items older than what was already released go out at once (a late frame after a gap).
    """

    def __init__(self, window: int = 16, max_wait_s: float = 0.2) -> None:
        self.window = window
        self.max_wait_s = max_wait_s
        self._next: dict[str, int] = {}
        self._held: dict[str, dict[int, tuple[float, T]]] = defaultdict(dict)
        self.late = 0

    def push(self, camera: str, frame_id: int, item: T) -> list[T]:
        expected = self._next.get(camera)
        if expected is not None and frame_id < expected:
            self.late += 1
            return [item]
        self._held[camera][frame_id] = (time.monotonic(), item)
        return self._flush(camera, force=len(self._held[camera]) > self.window)

    def poll(self) -> list[T]:
        """Items whose wait ran out; call it regularly."""
        out: list[T] = []
        now = time.monotonic()
        for camera, held in self._held.items():
            if held and now - min(t for t, _ in held.values()) > self.max_wait_s:
                out.extend(self._flush(camera, force=True))
        return out

    def held(self) -> int:
        return sum(len(h) for h in self._held.values())

    def _flush(self, camera: str, force: bool) -> list[T]:
        """Release the in-order run of held items; ``force`` first skips the gap before it."""
        held = self._held[camera]
        expected = self._next.get(camera)
        out: list[T] = []
        while held:
            lowest = min(held)
            if lowest != expected and not force:
                break
            out.append(held.pop(lowest)[1])
            expected, force = lowest + 1, False
        if expected is not None:
            self._next[camera] = expected
        return out
