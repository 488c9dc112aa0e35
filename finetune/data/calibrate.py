"""Compare the synthetic generator's measurements with the real pipeline's on the test media.

    python -m finetune.data.calibrate            # prints a markdown table (docs/training.md)

Both sides go through the same estimator, fusion and timeline; the table
shows what each reports: AU intensity on resting stretches (the noise floor),
AU event peaks (expression strength), events per second and blinks.
"""

from __future__ import annotations

import numpy as np

from tools.facs import AU_CODES

# Resting stretches of the real media, from tests/data/aus_labels.json.
REAL_REST = {"single_face.mp4": (0.0, 0.5)}


def _stats(tracks_with_rest) -> dict:
    rest_p95, peaks, events, seconds, blinks = [], [], 0, 0.0, 0
    for t, rest in tracks_with_rest:
        ts = np.asarray(t.timestamps, float)
        if rest is not None:
            rows = (ts >= rest[0]) & (ts <= rest[1])
            if rows.any():
                rest_p95.append(np.percentile(np.asarray(t.aus)[rows], 95, axis=0))
        for e in t.events:
            if e.au not in ("AU43", "AU45"):
                peaks.append(e.peak_intensity)
                events += 1
            elif e.au == "AU45":
                blinks += 1
        seconds += max(t.end - t.start, 1e-6)
    return {
        "rest_p95_max": float(np.max(rest_p95)) if rest_p95 else float("nan"),
        "rest_p95_mean": float(np.mean(rest_p95)) if rest_p95 else float("nan"),
        "peak_median": float(np.median(peaks)) if peaks else float("nan"),
        "peak_p90": float(np.percentile(peaks, 90)) if peaks else float("nan"),
        "events_per_s": events / seconds,
        "blinks_per_s": blinks / seconds,
    }


def real_stats(fps: float = 8.0) -> dict:
    from tools import analyze, assets

    rows = []
    for name in ("single_face.mp4", "WolfgangLanger_Pexels.mp4"):
        a = analyze(assets.media(name), fps=fps, include_landmarks=False)
        rows += [(t, REAL_REST.get(name)) for t in a.tracks]
    return _stats(rows)


def synthetic_stats(n: int = 40, seed: int = 0) -> dict:
    from finetune.data import synthetic

    rows = []
    for i in range(n):
        kind = "neutral" if i % 4 == 0 else "single"
        a, exs = synthetic.make_clip(seed * 1000 + i, scenario=kind)
        for t in a.tracks:
            rows.append((t, (t.start, t.end) if kind == "neutral" else None))
    return _stats(rows)


def table() -> str:
    r, s = real_stats(), synthetic_stats()
    heads = {"rest_p95_max": "resting AU p95, max over AUs", "rest_p95_mean": "resting AU p95, mean",
             "peak_median": "event peak, median", "peak_p90": "event peak, p90",
             "events_per_s": "AU events per s (no blinks)", "blinks_per_s": "blinks per s"}
    lines = ["| measured by the real tools | real media | synthetic |", "|---|---|---|"]
    lines += [f"| {h} | {r[k]:.2f} | {s[k]:.2f} |" for k, h in heads.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(f"({len(AU_CODES)} AUs)")
    print(table())
