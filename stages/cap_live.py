"""The background reader of a live source: grabs all the time, keeps only the newest frame.

A camera does not wait for the graph. If frames were read only when the graph asked for one,
they would queue up in the decoder's and the network's buffers and the latency would grow without
bound. So one thread per camera reads continuously; the stage's ``produce`` takes the newest frame
("latest frame wins") and a frame replaced before anybody took it is counted as ``dropped``.

The thread owns the ``cv2.VideoCapture`` (opened, read and released only there), reconnects with
exponential backoff when the stream cannot be opened, ends, fails or stalls, and never holds the
lock while it blocks, so ``produce`` never waits on the network.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np

from .cap_open import SourceSpec, open_capture


class RateLimiter:
    """Keeps at most ``max_fps`` frames per second of time ``t`` (wall or video clock).

    Tolerates a quarter period of jitter by default, never lets the long-run rate exceed ``max_fps``, and
    does not burst after a gap.
    """

    def __init__(self, max_fps: float, tolerance_s: float | None = None) -> None:
        self.period = 1.0 / max_fps if max_fps > 0 else 0.0
        # wall clocks jitter (a quarter period is forgiven); a video's own timestamps do not
        self.tolerance = 0.25 * self.period if tolerance_s is None else tolerance_s
        self.next: float | None = None

    def keep(self, t: float) -> bool:
        if not self.period:
            return True
        if self.next is not None and t < self.next - self.tolerance:
            return False
        self.next = (t if self.next is None else self.next) + self.period
        if self.next < t:
            self.next = t + self.period
        return True


@dataclass
class LiveFrame:
    image: np.ndarray
    seq: int  # frames read from the source since the stage started, all connections together
    captured_at: float  # wall clock when the frame came out of the decoder
    decode_ms: float


@dataclass
class LiveStats:
    read: int = 0  # frames that came from the source
    kept: int = 0  # frames decoded for the graph (after skip and max_fps)
    skipped: int = 0  # left out on purpose (skip, max_fps): never decoded to BGR
    dropped: int = 0  # decoded, then replaced by a newer frame before the graph took it
    reconnects: int = 0  # attempts to open the stream again after a failure
    abandoned: int = 0  # readers stuck in a blocking call that the watchdog replaced
    connected: bool = False
    decode_ms: float = 0.0  # moving average per kept frame: reader-thread CPU ms in grab + retrieve
    width: int = 0
    height: int = 0
    last_error: str = ""


class LiveReader:
    """One camera's reader thread. All public methods are for the stage's (main) thread."""

    def __init__(
        self,
        spec: SourceSpec,
        log: logging.Logger,
        *,
        camera: str,
        open_kwargs: dict[str, Any],
        reconnect_initial_s: float,
        reconnect_max_s: float,
        stall_timeout_s: float,
        skip: int = 1,
        max_fps: float = 0.0,
        opener: Callable[..., Any] = open_capture,
        grace_s: float = 5.0,
        pace: bool = False,
        loop: bool = True,
    ) -> None:
        self.spec = spec
        self.log = log
        self.camera = camera
        self.open_kwargs = open_kwargs
        self.initial = reconnect_initial_s
        self.max = max(reconnect_max_s, reconnect_initial_s)
        self.stall_timeout_s = stall_timeout_s
        self.skip = max(1, skip)
        self.limiter = RateLimiter(max_fps)
        self.opener = opener
        self.grace_s = grace_s  # beyond its own timeout, how long a blocking call may take before the watchdog acts
        # A file read as a live camera: pace it at its own frame rate (pace), and at its end start
        # again at once (loop) or end the source; a stream that ends is reconnected instead.
        self.pace = pace and spec.kind == "file"
        self.loop = loop
        self.ended = False
        self.stats = LiveStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._latest: LiveFrame | None = None
        self._spares: list[np.ndarray] = []
        self._seq = 0
        self._gen = 0
        self._busy_since: float | None = None  # monotonic start of the blocking call in progress
        self._busy_limit = 0.0
        self._thread: threading.Thread | None = None

    # -- main-thread API -----------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            self._gen += 1
            gen = self._gen
            self._busy_since = None
        self._thread = threading.Thread(target=self._main, args=(gen,), name=f"capture-{self.camera}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Ask the thread to end and wait a little; a thread stuck in a read is left to die
        with the process (it is a daemon, and releases its capture if it ever returns)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and timeout > 0:
            thread.join(timeout)
        with self._lock:
            self._gen += 1
            self._latest = None
            self._spares.clear()

    def pending(self) -> bool:
        return self._latest is not None

    def take(self) -> LiveFrame | None:
        """The newest frame not yet taken, or None. Hand its image back with :meth:`recycle`."""
        with self._lock:
            frame, self._latest = self._latest, None
            return frame

    def put_back(self, frame: LiveFrame) -> None:
        """The graph could not take ``frame`` after all (no free slot): keep it unless a newer
        one came meanwhile, in which case it counts as dropped."""
        with self._lock:
            if self._latest is None:
                self._latest = frame
            else:
                self.stats.dropped += 1
                self._spares.append(frame.image)

    def recycle(self, image: np.ndarray) -> None:
        """Give a taken frame's buffer back to be decoded into again."""
        with self._lock:
            if len(self._spares) < 3:
                self._spares.append(image)

    def snapshot(self) -> LiveStats:
        with self._lock:
            return LiveStats(**vars(self.stats))

    def watchdog(self) -> None:
        """Replace a reader that died, or that has blocked longer than its timeout allows
        (a driver or a pipeline that ignores read timeouts). Cheap; call it often."""
        if self._stop.is_set() or self.ended:
            return
        thread = self._thread
        with self._lock:
            busy_since, limit = self._busy_since, self._busy_limit
        stuck = busy_since is not None and time.monotonic() - busy_since > limit
        if thread is not None and thread.is_alive() and not stuck:
            return
        with self._lock:
            self.stats.connected = False
            if stuck:
                self.stats.abandoned += 1  # the new reader counts its first open as a reconnect
        if stuck:
            self.log.warning("camera %s: reading %s blocked for more than %.1f s; starting a new reader",
                             self.camera, self.spec.display, limit)
        else:
            self.log.error("camera %s: reader thread ended unexpectedly; starting a new one", self.camera)
        self.start()

    # -- the reader thread ---------------------------------------------------------------------

    def _current(self, gen: int) -> bool:
        return gen == self._gen and not self._stop.is_set()

    def _busy(self, gen: int, limit: float | None) -> None:
        with self._lock:
            if gen == self._gen:
                self._busy_since = None if limit is None else time.monotonic()
                self._busy_limit = limit or 0.0

    def _main(self, gen: int) -> None:
        try:
            self._run(gen)
        except Exception:
            self.log.exception("camera %s: reader thread failed", self.camera)
            with self._lock:
                self.stats.last_error = "reader thread failed"
                self.stats.connected = False
        finally:
            self._busy(gen, None)

    def _run(self, gen: int) -> None:
        delay = self.initial
        first = gen == 1
        grace = self.grace_s
        open_timeout = float(self.open_kwargs.get("open_timeout_s", 10.0))
        while self._current(gen):
            if not first:
                with self._lock:
                    if gen == self._gen:
                        self.stats.reconnects += 1
            first = False
            self._busy(gen, open_timeout + grace)
            cap = self.opener(self.spec, read_timeout_s=self.stall_timeout_s, **self.open_kwargs)
            self._busy(gen, None)
            if not self._current(gen):
                cap.release()
                return
            if not cap.isOpened():
                cap.release()
                with self._lock:
                    self.stats.connected = False
                    self.stats.last_error = "cannot open"
                self.log.warning("camera %s: cannot open %s; retrying in %.3g s", self.camera, self.spec.display, delay)
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, self.max)
                continue
            with self._lock:
                self.stats.connected = True
            self.log.info("camera %s: connected to %s", self.camera, self.spec.display)
            frames, reason = self._read(cap, gen)
            cap.release()
            if not self._current(gen):
                return
            if self.spec.kind == "file" and frames and reason != "failed to decode":
                if self.loop:
                    first = True  # a file read as a camera: play it again, which is no reconnect
                    continue
                self.ended = True
                self.log.info("camera %s: end of %s", self.camera, self.spec.display)
                return
            with self._lock:
                self.stats.connected = False
                self.stats.last_error = reason
            if frames:
                delay = self.initial  # it worked for a while: start the backoff over
            self.log.warning("camera %s: %s %s after %d frames; reconnecting in %.3g s",
                             self.camera, self.spec.display, reason, frames, delay)
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, self.max)

    def _read(self, cap: Any, gen: int) -> tuple[int, str]:
        """Read until the stream fails; returns (frames read, why it stopped)."""
        frames = 0
        last_frame = time.monotonic()
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) if self.pace else 0.0
        paced_from = time.monotonic()
        while self._current(gen):
            if fps > 0 and frames:
                due = paced_from + frames / fps
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    break
            self._busy(gen, self.stall_timeout_s + self.grace_s)
            cpu0 = time.thread_time()  # CPU time, so waiting for the network does not count as decoding
            ok = cap.grab()
            mono = time.monotonic()
            if not ok:
                self._busy(gen, None)
                stalled = mono - last_frame >= self.stall_timeout_s * 0.9 and self.spec.kind != "file"
                return frames, "stalled" if stalled else "ended or failed"
            wall = time.time()
            frames += 1
            last_frame = mono
            with self._lock:
                seq = self._seq
                self._seq += 1
                self.stats.read += 1
            if seq % self.skip or not self.limiter.keep(mono):
                with self._lock:
                    self.stats.skipped += 1
                continue
            with self._lock:
                buf = self._spares.pop() if self._spares else None
            ok, image = cap.retrieve(image=buf) if buf is not None else cap.retrieve()
            self._busy(gen, None)
            decode_ms = (time.thread_time() - cpu0) * 1000.0
            if not ok or image is None:
                return frames, "failed to decode"
            with self._lock:
                if gen != self._gen:
                    return frames, "replaced"
                if self._latest is not None:
                    self.stats.dropped += 1
                    self._spares.append(self._latest.image)
                self._latest = LiveFrame(image, seq, wall, decode_ms)
                s = self.stats
                s.kept += 1
                s.decode_ms = decode_ms if s.kept == 1 else s.decode_ms * 0.9 + decode_ms * 0.1
                s.height, s.width = image.shape[:2]
        return frames, "stopped"


def device_settings(fourcc: str | None, size: tuple[int, int] | None, fps: float) -> dict[str, Any]:
    """What :func:`open_capture` sets on a V4L2 device."""
    return {
        "fourcc": fourcc,
        "width": size[0] if size else None,
        "height": size[1] if size else None,
        "fps": fps or None,
    }


__all__ = ["LiveFrame", "LiveReader", "LiveStats", "RateLimiter", "device_settings"]
