"""Per-camera frame order for stages that need it (a tracker) when upstream has replicas."""

from __future__ import annotations

import time
from typing import Generic, TypeVar

T = TypeVar("T")


class Reorderer(Generic[T]):
    """Releases items of each camera in frame-id order.

    Frame ids can have gaps (a live source dropped a frame, a filter stage dropped one), so a
    camera waits for a missing frame at most ``max_wait_s`` since it last made progress, or until
    it holds more than ``window`` items (more than can be in flight upstream, so the frame is
    gone); then the gap is skipped. A frame arriving after its gap was skipped goes out at once
    and is counted in ``late``.
    """

    def __init__(self, window: int = 16, max_wait_s: float = 0.2) -> None:
        self.window = window
        self.max_wait_s = max_wait_s
        self._next: dict[str, int] = {}
        self._held: dict[str, dict[int, T]] = {}
        self._waiting_since: dict[str, float] = {}
        self.late = 0

    def push(self, camera: str, frame_id: int, item: T) -> list[T]:
        expected = self._next.get(camera)
        if expected is not None and frame_id < expected:
            self.late += 1
            return [item]
        held = self._held.setdefault(camera, {})
        if not held:
            self._waiting_since[camera] = time.monotonic()
        held[frame_id] = item
        return self._flush(camera, force=len(held) > self.window)

    def replace(self, camera: str, frame_id: int, item: T) -> None:
        """Swap a held item for another (the worker drops the credit token it already used)."""
        if frame_id in self._held.get(camera, {}):
            self._held[camera][frame_id] = item

    def poll(self) -> list[T]:
        """Items whose wait for a missing predecessor ran out; call it regularly."""
        out: list[T] = []
        now = time.monotonic()
        for camera, held in self._held.items():
            if held and now - self._waiting_since[camera] > self.max_wait_s:
                out.extend(self._flush(camera, force=True))
        return out

    def held(self) -> int:
        return sum(len(h) for h in self._held.values())

    def _flush(self, camera: str, force: bool) -> list[T]:
        """Release the in-order run of held items; ``force`` first skips the gap before it.

        The first frame of a camera is held too (``expected`` unknown): an earlier one may still
        be on its way through another replica.
        """
        held = self._held[camera]
        expected = self._next.get(camera)
        out: list[T] = []
        while held:
            lowest = min(held)
            if lowest != expected and not force:
                break
            out.append(held.pop(lowest))
            expected, force = lowest + 1, False
        if out:
            self._next[camera] = expected  # type: ignore[assignment]
            self._waiting_since[camera] = time.monotonic()
        return out
