"""A constant-velocity Kalman filter for boxes, vectorised over many tracks.

State per track: ``[cx, cy, w, h, vcx, vcy, vw, vh]`` (box centre, width, height and their
velocities in pixels per frame); the measurement is ``[cx, cy, w, h]``. Process and measurement
noise scale with the box size (as in SORT/DeepSORT/ByteTrack), so one set of weights fits a
40-pixel plate and a 400-pixel truck. Width and height are filtered separately (not aspect
ratio and height) because plates keep their shape but change size quickly when they approach.

Every function takes and returns stacked arrays: ``mean`` of shape ``(N, 8)`` and ``cov`` of
shape ``(N, 8, 8)``. One ``predict`` call advances one frame; a tracker that skipped frames
calls it once per skipped frame, which gives exactly the uncertainty it would have had if the
frames had come in without detections.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BoxKalmanFilter", "xyxy_to_cxcywh", "cxcywh_to_xyxy"]

NDIM = 4
MIN_SIZE = 1.0  # pixels: widths and heights never drop below this (noise would vanish)


def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    """``[x1, y1, x2, y2]`` rows to ``[cx, cy, w, h]`` rows."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    wh = boxes[:, 2:] - boxes[:, :2]
    return np.concatenate([boxes[:, :2] + wh / 2.0, wh], axis=1)


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``[cx, cy, w, h]`` rows to ``[x1, y1, x2, y2]`` rows (sizes clamped to ``MIN_SIZE``)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    half = np.maximum(boxes[:, 2:], MIN_SIZE) / 2.0
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)


class BoxKalmanFilter:
    """Constant-velocity model on ``(cx, cy, w, h)`` with size-proportional noise.

    ``std_weight_position`` and ``std_weight_velocity`` are the standard deviations of position
    and velocity noise as fractions of the box size (per frame); ``min_std_px`` is a floor in
    pixels so tiny boxes (distant plates) do not get an unrealistically sharp measurement model.

    Velocities get floors in pixels per frame too: a plate moves as fast as the vehicle that
    carries it, so noise proportional to a 15-pixel plate height would make the filter refuse
    the plate's real speed for many frames. ``init_velocity_std_px`` is the prior of a new
    track's centre velocity, ``velocity_noise_px`` the least change of the centre velocity per
    frame. Size velocities keep noise proportional to the size.
    """

    def __init__(
        self,
        std_weight_position: float = 1.0 / 20,
        std_weight_velocity: float = 1.0 / 160,
        min_std_px: float = 0.5,
        init_velocity_std_px: float = 32.0,
        velocity_noise_px: float = 0.2,
    ) -> None:
        self.std_pos = float(std_weight_position)
        self.std_vel = float(std_weight_velocity)
        self.min_std = float(min_std_px)
        self.init_vel_std = float(init_velocity_std_px)
        self.vel_noise = float(velocity_noise_px)
        self.F = np.eye(2 * NDIM)
        self.F[:NDIM, NDIM:] = np.eye(NDIM)
        self.H = np.eye(NDIM, 2 * NDIM)

    def _size(self, mean: np.ndarray) -> np.ndarray:
        """``(N, 4)``: the size each state coordinate's noise scales with (w, h, w, h)."""
        wh = np.maximum(mean[:, 2:4], MIN_SIZE)
        return np.concatenate([wh, wh], axis=1)

    def initiate(self, measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """New tracks from ``(N, 4)`` measurements ``[cx, cy, w, h]``: zero velocity, wide prior."""
        z = np.asarray(measurements, dtype=np.float64).reshape(-1, NDIM)
        mean = np.concatenate([z, np.zeros_like(z)], axis=1)
        size = self._size(mean)
        std = np.concatenate([
            np.maximum(2.0 * self.std_pos * size, self.min_std),
            10.0 * self.std_vel * size,
        ], axis=1)
        std[:, 4:6] = np.maximum(std[:, 4:6], self.init_vel_std)  # centre velocity only
        cov = np.zeros((len(z), 2 * NDIM, 2 * NDIM))
        idx = np.arange(2 * NDIM)
        cov[:, idx, idx] = std**2
        return mean, cov

    def predict(self, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance every track by one frame."""
        if len(mean) == 0:
            return mean, cov
        size = self._size(mean)
        std = np.concatenate([
            np.maximum(self.std_pos * size, self.min_std * 0.5),
            self.std_vel * size,
        ], axis=1)
        std[:, 4:6] = np.maximum(std[:, 4:6], self.vel_noise)
        mean = mean @ self.F.T
        cov = self.F @ cov @ self.F.T
        idx = np.arange(2 * NDIM)
        cov[:, idx, idx] += std**2
        mean[:, 2:4] = np.maximum(mean[:, 2:4], MIN_SIZE)
        return mean, cov

    def project(self, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted measurement ``(N, 4)`` and its covariance ``(N, 4, 4)``."""
        size = self._size(mean)[:, :NDIM]
        std = np.maximum(self.std_pos * size, self.min_std)
        projected = cov[:, :NDIM, :NDIM].copy()
        idx = np.arange(NDIM)
        projected[:, idx, idx] += std**2
        return mean[:, :NDIM].copy(), projected

    def update(self, mean: np.ndarray, cov: np.ndarray, measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Correct ``N`` tracks with one measurement each (rows aligned)."""
        if len(mean) == 0:
            return mean, cov
        z = np.asarray(measurements, dtype=np.float64).reshape(-1, NDIM)
        z_pred, S = self.project(mean, cov)
        PHt = cov[:, :, :NDIM]  # P @ H.T, since H selects the first four coordinates
        # K = P H^T S^-1, solved rather than inverted (S is symmetric positive definite).
        K = np.linalg.solve(S, PHt.transpose(0, 2, 1)).transpose(0, 2, 1)
        innovation = z - z_pred
        mean = mean + np.einsum("nij,nj->ni", K, innovation)
        cov = cov - K @ S @ K.transpose(0, 2, 1)
        cov = 0.5 * (cov + cov.transpose(0, 2, 1))  # keep it symmetric against round-off
        mean[:, 2:4] = np.maximum(mean[:, 2:4], MIN_SIZE)
        return mean, cov
