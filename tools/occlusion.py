"""Occlusion: is part of the face covered (a hand over the mouth, a cup, hair)?

Two cheap kinds of evidence, both from pixels sampled at the landmarks while a
frame is in memory (`frame_features`, ~0.1 ms) and scored per track (`score`):

- lips that stop looking like lips: the lips are redder than the cheeks on every
  face we measured (chroma difference 0.01-0.05); a hand or an object over the
  mouth brings that difference to about zero. The reference is the track's own
  typical redness (lighting and make-up differ), or a population prior for
  stills and short tracks.
- regions whose landmarks fall outside the image (a face cut off by the frame).

A region scored >= FLAG marks its AUs unreliable. See docs/aus.md for
measurements and the failure modes (a partial cover that leaves some lip visible
is missed; dark or red-tinted lighting lowers the contrast).
"""

from __future__ import annotations

import numpy as np

from tools.errors import FaceReasonError
from tools.facs import AU_CODES

# MediaPipe FaceMesh (478) landmark indices per facial region.
REGIONS: dict[str, list[int]] = {
    "forehead": [10, 151, 9, 108, 337, 67, 297, 109, 338, 69, 299],
    "brow_r": [70, 63, 105, 66, 107, 55, 65, 52, 53, 46],
    "brow_l": [300, 293, 334, 296, 336, 285, 295, 282, 283, 276],
    "eye_r": [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246],
    "eye_l": [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466],
    "cheek_r": [50, 101, 118, 117, 123, 187, 205, 36, 142, 126],
    "cheek_l": [280, 330, 347, 346, 352, 411, 425, 266, 371, 355],
    "nose": [1, 2, 4, 5, 6, 19, 94, 98, 327, 168, 197, 195, 48, 278, 64, 294],
    # the lip body: each outer-contour point paired with the inner-contour point across
    # the lip from it (LIP_INNER), sampled half way between them (`frame_features`)
    "mouth": [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 146, 91, 181, 84, 17, 314, 405,
              321, 375],
    "chin": [152, 148, 176, 149, 150, 377, 400, 378, 379, 175, 199, 200, 18, 32, 262, 421, 201],
}
# The inner lip contour, point for point across the lip from REGIONS["mouth"] (upper lip
# corner to corner, then the lower lip). Sampled on the contours themselves, an open mouth
# put half the points on teeth and the dark cavity: a broad toothy smile in
# multi_face.jpg read as a covered mouth (score 0.58, AU12 dropped as unreliable), and the
# hand over WolfgangLanger's mouth was found in 16 frames; at the lip body, in 43, still
# none outside a labelled cover (docs/aus.md, Occlusion).
LIP_INNER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 95, 88, 178, 87, 14, 317, 402,
             318, 324]
REGION_NAMES = list(REGIONS)
_IDX = np.concatenate([REGIONS[r] for r in REGION_NAMES])
# the second point of each sample (the same point outside the mouth): samples are midpoints
_IDX2 = np.concatenate([LIP_INNER if r == "mouth" else REGIONS[r] for r in REGION_NAMES])
_SPLITS = np.cumsum([len(REGIONS[r]) for r in REGION_NAMES])[:-1]
FEATURES_PER_REGION = 5  # mean R, G, B, edge energy, fraction of points inside the image


def frame_features(rgb: np.ndarray, landmarks_px: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    lm = np.asarray(landmarks_px)
    pts = 0.5 * (lm[_IDX, :2] + lm[_IDX2, :2])
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
    x = np.clip(np.rint(pts[:, 0]).astype(np.intp), 2, w - 3)
    y = np.clip(np.rint(pts[:, 1]).astype(np.intp), 2, h - 3)
    col = rgb[y, x].astype(np.float32)
    g = rgb[..., 1]
    edge = (np.abs(g[y, x + 2].astype(np.float32) - g[y, x - 2])
            + np.abs(g[y + 2, x].astype(np.float32) - g[y - 2, x]))
    out = np.empty((len(REGION_NAMES), FEATURES_PER_REGION), np.float32)
    for k, (c, e, ins) in enumerate(zip(np.split(col, _SPLITS), np.split(edge, _SPLITS),
                                        np.split(inside, _SPLITS), strict=True)):
        out[k, :3] = c.mean(0)
        out[k, 3] = e.mean()
        out[k, 4] = ins.mean()
    return out.ravel()


# AUs read from each region; an occluded region makes these unreliable.
REGION_AUS: dict[str, list[str]] = {
    "forehead": ["AU01", "AU02"],
    "brow_r": ["AU01", "AU02", "AU04"],
    "brow_l": ["AU01", "AU02", "AU04"],
    "eye_r": ["AU05", "AU06", "AU07", "AU43", "AU45"],
    "eye_l": ["AU05", "AU06", "AU07", "AU43", "AU45"],
    "cheek_r": ["AU06"],
    "cheek_l": ["AU06"],
    "nose": ["AU09", "AU10"],
    "mouth": ["AU10", "AU12", "AU14", "AU15", "AU20", "AU23", "AU24", "AU25", "AU26", "AU28"],
    "chin": ["AU17", "AU26"],
}
FLAG = 0.5  # score at which a frame (or region) counts as occluded
LIP_REDNESS_PRIOR = 0.03  # mouth minus cheek chroma of an uncovered face (measured, see docs)
TRACK_REFERENCE_S = 2.0  # tracks at least this long use their own redness reference
LIP_COVERED_FRACTION = 0.6  # redness below this fraction of the reference starts to count


class OcclusionInputError(FaceReasonError):
    code = "bad_occlusion_input"


def _region_table(features: np.ndarray) -> np.ndarray:
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[1] != len(REGION_NAMES) * FEATURES_PER_REGION:
        raise OcclusionInputError(
            f"features must have shape (n, {len(REGION_NAMES) * FEATURES_PER_REGION}) "
            f"(rows of frame_features); got {f.shape}.")
    return f.reshape(len(f), len(REGION_NAMES), FEATURES_PER_REGION)


def region_scores(features: np.ndarray, duration: float | None = None) -> np.ndarray:
    """(n, regions) occlusion score in [0, 1] per region, columns = REGION_NAMES."""
    f = _region_table(features)
    n = len(f)
    rgb = f[..., :3]
    chroma = rgb[..., 0] / np.maximum(rgb.sum(-1), 1e-6)
    cheeks = chroma[:, [REGION_NAMES.index("cheek_r"), REGION_NAMES.index("cheek_l")]].mean(1)
    redness = chroma[:, REGION_NAMES.index("mouth")] - cheeks
    ref = LIP_REDNESS_PRIOR
    if duration is not None and duration >= TRACK_REFERENCE_S and n >= 10:
        # The upper quartile: the lips are visible in most frames of most tracks,
        # and an open laughing mouth (teeth) lowers redness in some of the rest.
        ref = max(float(np.percentile(redness, 75)), 1e-3)
    cut = LIP_COVERED_FRACTION * ref
    out = 1.0 - f[..., 4]  # share of the region's points outside the image
    out[:, REGION_NAMES.index("mouth")] = np.maximum(
        out[:, REGION_NAMES.index("mouth")], np.clip((cut - redness) / cut, 0.0, 1.0))
    return np.clip(out, 0.0, 1.0)


def score(features: np.ndarray, blendshapes: np.ndarray, landmarks: np.ndarray,
          timestamps: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Whole track: occlusion score (n,) in [0, 1] and au_reliable (n, K) uint8.

    `blendshapes` and `landmarks` are checked for shape and kept in the signature
    for evidence that needs them; the score itself comes from `features`. Pass
    `timestamps` so a long track can use its own lip-colour reference.
    """
    f = _region_table(features)
    n = len(f)
    if np.asarray(blendshapes).shape[0] != n or np.asarray(landmarks).shape[0] != n:
        raise OcclusionInputError(
            f"features, blendshapes and landmarks must have the same number of frames; "
            f"got {n}, {np.asarray(blendshapes).shape[0]}, {np.asarray(landmarks).shape[0]}.")
    duration = None
    if timestamps is not None and n > 1:
        duration = float(np.asarray(timestamps)[-1] - np.asarray(timestamps)[0])
    reg = region_scores(f.reshape(n, -1), duration)
    reliable = np.ones((n, len(AU_CODES)), np.uint8)
    for k, region in enumerate(REGION_NAMES):
        bad = reg[:, k] >= FLAG
        for au in REGION_AUS[region]:
            reliable[bad, AU_CODES.index(au)] = 0
    return reg.max(1).astype(np.float32), reliable
