"""Stable face identities across frames.

Each frame's faces are matched to the live tracks by the Hungarian algorithm
(scipy's `linear_sum_assignment`) on a cost that mixes box overlap and the
distance between face centres, relative to face size. A track that misses
frames stays alive for `max_gap_s` seconds (a blink of occlusion, a hand
passing); after that it ends for good, and a face that shows up later gets a
new id. Ids are never reused within a video.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between every box in a (n, 4) and b (m, 4); boxes are x0, y0, x1, y1."""
    a = np.asarray(a, np.float64)[:, None, :]
    b = np.asarray(b, np.float64)[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def centre_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance between box centres, in units of the track box's diagonal."""
    ca = (a[:, None, :2] + a[:, None, 2:]) / 2
    cb = (b[None, :, :2] + b[None, :, 2:]) / 2
    diag = np.linalg.norm(a[:, None, 2:] - a[:, None, :2], axis=-1)
    return np.linalg.norm(ca - cb, axis=-1) / np.maximum(diag, 1e-9)


@dataclass
class _Live:
    track_id: int
    bbox: np.ndarray
    last_time: float


class Tracker:
    """Assigns a stable integer id (from 1) to each face observation, frame by frame."""

    def __init__(self, max_gap_s: float = 1.0, max_cost: float = 0.9):
        self.max_gap_s = max_gap_s
        self.max_cost = max_cost
        self._live: list[_Live] = []
        self._next_id = 1

    def update(self, boxes: np.ndarray, time_s: float) -> list[int]:
        """Ids for this frame's boxes (n, 4), in the same order."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        # Tracks unseen for longer than the gap are finished and never matched again.
        self._live = [t for t in self._live if time_s - t.last_time <= self.max_gap_s]
        ids = [0] * len(boxes)
        if self._live and len(boxes):
            prev = np.stack([t.bbox for t in self._live])
            # Overlap decides for slow motion; centre distance rescues fast moves.
            cost = 0.5 * (1.0 - iou_matrix(prev, boxes)) + 0.5 * np.minimum(
                centre_distance(prev, boxes), 1.0)
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols, strict=True):
                if cost[r, c] <= self.max_cost:
                    ids[c] = self._live[r].track_id
                    self._live[r].bbox = boxes[c]
                    self._live[r].last_time = time_s
        for i, box in enumerate(boxes):
            if ids[i] == 0:
                ids[i] = self._next_id
                self._live.append(_Live(self._next_id, box, time_s))
                self._next_id += 1
        return ids
