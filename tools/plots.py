"""One PNG per face: AU intensities over time above the emotion timeline.

Top: a heatmap of AU intensity (0-5, FACS scale), one row per AU, time in
seconds; AU events are outlined (dashed when brief: a possible
micro-expression). Middle: the smoothed emotion probabilities the segments
were computed from, with the segments shaded and labelled. Bottom (when
measured): valence and arousal. Stretches where the face was covered are
hatched; stretches where it was not visible are grey. A still image gets bar
charts instead.

Figures are drawn with matplotlib's object API on an Agg canvas, so nothing
touches pyplot's global state or needs a display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from tools.analysis import Analysis, Track
from tools.errors import FaceReasonError
from tools.facs import AU_NAMES
from tools.timeline import build_timeline, frame_durations, observed_spans, occluded_spans, smooth

# Colours people tend to expect (warm for joy, red for anger, blue for sadness).
EMOTION_COLORS = {
    "anger": "#d62728", "disgust": "#8c8c00", "fear": "#9467bd", "happiness": "#f2a900",
    "sadness": "#1f77b4", "surprise": "#17becf", "neutral": "#7f7f7f", "contempt": "#8c564b",
}
_FALLBACK = ["#e377c2", "#2ca02c", "#ff7f0e", "#bcbd22", "#393b79", "#637939", "#843c39"]
AU_CMAP = "magma"
DPI = 110


def _colors(labels: list[str]) -> dict[str, str]:
    extra = iter(_FALLBACK * (1 + len(labels) // len(_FALLBACK)))
    return {lab: EMOTION_COLORS.get(lab) or next(extra) for lab in labels}


def _au_labels(codes: list[str]) -> list[str]:
    return [f"{c} {AU_NAMES.get(c, '')}".strip() for c in codes]


def _time_edges(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cell edges for a heatmap over non-uniform time, and the column of each frame.

    Each frame spans until the next one; a gap gets its own empty (NaN) column
    so the plot shows it instead of stretching the frame before it.
    """
    end = t + frame_durations(t)
    gap = end[:-1] < t[1:] - 1e-9  # the frame before a gap ends before the next starts
    cols = np.arange(len(t)) + np.r_[0, np.cumsum(gap)]
    edges = np.empty(cols[-1] + 2)
    edges[cols] = t
    edges[cols[:-1][gap] + 1] = end[:-1][gap]  # left edge of each gap column
    edges[-1] = end[-1]
    return edges, cols


def _shade_unseen_and_covered(ax, track: Track, t: np.ndarray) -> None:
    spans = observed_spans(t)
    for (_, a), (b, _) in zip(spans[:-1], spans[1:], strict=True):
        ax.axvspan(a, b, color="#d9d9d9", zorder=0, lw=0)
        ax.text((a + b) / 2, 0.5, "not visible", transform=ax.get_xaxis_transform(),
                ha="center", va="center", rotation=90, fontsize=7.5, color="#777777")
    for a, b in occluded_spans(track):
        ax.axvspan(a, b, facecolor="none", edgecolor="#555555", hatch="///", lw=0, zorder=3)


def _label_segments(ax, segments, colors: dict[str, str], x0: float, x1: float) -> None:
    """Shade segments; name them above the axes where the name fits without overlap."""
    width = max(x1 - x0, 1e-9)
    right = -np.inf  # right end of the last name drawn, in axes fraction
    for s in segments:
        ax.axvspan(s.start, s.end, color=colors[s.label], alpha=0.13, lw=0, zorder=1)
        ax.axvline(s.start, color="#444444", lw=0.5, alpha=0.5, zorder=2)
        if s.micro:
            ax.plot([s.peak_time], [0.97], marker="v", ms=6, color=colors[s.label], zorder=6,
                    transform=ax.get_xaxis_transform(), clip_on=False)
        text = s.label + (" (micro)" if s.micro else "")
        mid = ((s.start + s.end) / 2 - x0) / width
        half = 0.0033 * len(text)  # roughly half the text width at 7.5 pt on a 10-inch axis
        if mid - half > right + 0.004 and (s.end - s.start) / width > 0.02:
            ax.text(mid, 1.01, text, transform=ax.transAxes, ha="center", va="bottom",
                    fontsize=7.5, color=colors[s.label], fontweight="bold", clip_on=False)
            right = mid + half


def _draw_video(fig: Figure, analysis: Analysis, track: Track) -> None:
    t = np.asarray(track.timestamps, np.float64)
    codes, labels = analysis.au_codes, analysis.emotion_labels
    segments, events = track.segments, track.events
    if track.summary is None:  # not annotated: compute the timeline to show it
        segments, events, _ = build_timeline(track, labels, codes)
    panels = []
    if track.aus is not None:
        panels.append(("aus", max(2.0, 0.24 * len(codes))))
    if track.emotions is not None:
        panels.append(("emotions", 2.8))
    if track.valence is not None or track.arousal is not None:
        panels.append(("va", 1.2))
    if not panels:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no expression measurements on this track", ha="center", va="center")
        ax.set_axis_off()
        return
    heights = [h for _, h in panels]
    fig.set_size_inches(12, sum(heights) + 1.4)
    axes = fig.subplots(len(panels), 1, sharex=True, gridspec_kw={"height_ratios": heights})
    axes = np.atleast_1d(axes)
    x0, x1 = t[0], observed_spans(t)[-1][1]
    colors = _colors(labels)
    for (kind, _), ax in zip(panels, axes, strict=True):
        if kind == "aus":
            edges, cols = _time_edges(t)
            grid = np.full((len(codes), len(edges) - 1), np.nan)
            grid[:, cols] = np.asarray(track.aus, np.float64).T
            mesh = ax.pcolormesh(edges, np.arange(len(codes) + 1), np.ma.masked_invalid(grid),
                                 cmap=colormaps[AU_CMAP].with_extremes(bad="#d9d9d9"),
                                 vmin=0, vmax=5, shading="flat")
            mesh.set_gid("au_heatmap")
            ax.set_yticks(np.arange(len(codes)) + 0.5, _au_labels(codes), fontsize=7.5)
            ax.set_ylim(len(codes), 0)  # first AU at the top, as in FACS tables
            row = {c: i for i, c in enumerate(codes)}
            for ev in events:
                if ev.au in row:
                    ax.add_patch(Rectangle((ev.onset, row[ev.au]), ev.offset - ev.onset, 1,
                                           fill=False, ec="#00e5ff", lw=1.0,
                                           ls="--" if ev.micro else "-", zorder=4,
                                           gid=f"au_event:{ev.au}"))
            cb = fig.colorbar(mesh, ax=ax, pad=0.01, fraction=0.025)
            cb.set_label("AU intensity (0-5)", fontsize=8)
            for a, b in occluded_spans(track):
                ax.axvspan(a, b, facecolor="none", edgecolor="white", hatch="///", lw=0, zorder=3)
            ax.set_title("Action Units (outlined: events; dashed: brief, possible micro-expression)",
                         fontsize=9, loc="left")
        elif kind == "emotions":
            _shade_unseen_and_covered(ax, track, t)
            P = smooth(track.emotions, t)
            _label_segments(ax, segments, colors, x0, x1)
            shown = {s.label for s in segments}  # labels that won somewhere stand out
            spans = observed_spans(t)
            for j, lab in enumerate(labels):
                y = np.asarray(P[:, j], np.float64)
                style = {"lw": 1.6, "alpha": 1.0} if lab in shown else {"lw": 0.9, "alpha": 0.45}
                for a, b in spans:  # one line per observed stretch: never bridge a gap
                    m = (t >= a) & (t < b)
                    (line,) = ax.plot(t[m], y[m], color=colors[lab], zorder=5,
                                      label=lab if a == spans[0][0] else None, **style)
                    line.set_gid(f"emotion:{lab}")
            ax.set_ylim(0, 1)
            ax.set_ylabel("probability", fontsize=8)
            ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7.5, frameon=False)
            ax.set_title("Emotion (smoothed; shaded: segments; \u25bc brief display; hatched: face covered; grey: not visible)",
                         fontsize=9, loc="left", pad=14)
        else:
            _shade_unseen_and_covered(ax, track, t)
            for name, series, col in (("valence", track.valence, "#2ca02c"),
                                      ("arousal", track.arousal, "#d62728")):
                if series is not None:
                    y = smooth(series, t)
                    for a, b in observed_spans(t):
                        m = (t >= a) & (t < b)
                        ax.plot(t[m], y[m], color=col, lw=1.2,
                                label=name if a == t[0] else None)
            ax.axhline(0, color="#999999", lw=0.6)
            ax.set_ylim(-1, 1)
            ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7.5, frameon=False)
    axes[-1].set_xlim(x0, x1)
    axes[-1].set_xlabel("time (s)")


def _draw_still(fig: Figure, analysis: Analysis, track: Track) -> None:
    codes, labels = analysis.au_codes, analysis.emotion_labels
    fig.set_size_inches(11, max(4.0, 0.24 * len(codes) + 1.2))
    n_panels = (track.aus is not None) + (track.emotions is not None)
    if n_panels == 0:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no expression measurements on this face", ha="center", va="center")
        ax.set_axis_off()
        return
    axes = np.atleast_1d(fig.subplots(1, n_panels, gridspec_kw={"width_ratios": [1.2, 1][:n_panels]}))
    i = 0
    if track.aus is not None:
        ax = axes[i]
        i += 1
        v = np.asarray(track.aus, np.float64)[0]
        cmap = colormaps[AU_CMAP]
        bars = ax.barh(np.arange(len(codes)), v, color=[cmap(0.2 + 0.65 * x / 5) for x in v])
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
        ax.set_yticks(np.arange(len(codes)), _au_labels(codes), fontsize=7.5)
        ax.set_ylim(len(codes) - 0.5, -0.5)
        ax.set_xlim(0, 5)
        ax.set_xlabel("AU intensity (0-5)")
        ax.set_title("Action Units", fontsize=9, loc="left")
    if track.emotions is not None:
        ax = axes[i]
        p = np.asarray(track.emotions, np.float64)[0]
        colors = _colors(labels)
        bars = ax.barh(np.arange(len(labels)), p, color=[colors[lab] for lab in labels])
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
        ax.set_yticks(np.arange(len(labels)), labels, fontsize=8)
        ax.set_ylim(len(labels) - 0.5, -0.5)
        ax.set_xlim(0, 1)
        ax.set_xlabel("probability")
        ax.set_title("Emotion", fontsize=9, loc="left")


def _title(analysis: Analysis, track: Track) -> str:
    head = f"Face {track.track_id} - {analysis.source.name}"
    s = track.summary
    if s is None and (track.emotions is not None or track.aus is not None):
        _, _, s = build_timeline(track, analysis.emotion_labels, analysis.au_codes)
    if s is None:
        return head
    bits = []
    if s.dominant_share:
        bits.append(s.dominant_emotion if track.n == 1
                    else f"mostly {s.dominant_emotion} ({s.dominant_share:.0%})")
    if s.strongest_aus:
        bits.append("strongest " + ", ".join(f"{a} {v:.1f}" for a, v in s.strongest_aus[:3]))
    if s.occluded_share:
        bits.append(f"covered {s.occluded_share:.0%}")
    return head + ("  |  " + "; ".join(bits) if bits else "")


def track_figure(analysis: Analysis, track_id: int) -> Figure:
    """The figure for one track (not saved): for tests and notebooks."""
    try:
        track = analysis.track(track_id)
    except KeyError as exc:
        raise FaceReasonError(str(exc.args[0])) from None
    fig = Figure(dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    if track.n == 0:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "empty track", ha="center", va="center")
        ax.set_axis_off()
    elif track.n == 1:
        _draw_still(fig, analysis, track)
    else:
        _draw_video(fig, analysis, track)
    fig.suptitle(_title(analysis, track), fontsize=10.5, x=0.01, ha="left")
    return fig


def _check_dest(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        raise FaceReasonError(f"plot path {p} is a folder; give a file name such as {p / 'plot.png'}")
    if not p.parent.is_dir():
        raise FaceReasonError(f"cannot write plot {p}: folder {p.parent} does not exist")
    return p


def plot_track(analysis: Analysis, track_id: int, path: str | Path) -> Path:
    """Write the PNG of one track to `path`; returns the path."""
    p = _check_dest(path)
    fig = track_figure(analysis, track_id)
    fig.savefig(p, format="png", dpi=DPI)
    return p


def plot_analysis(analysis: Analysis, path: str | Path) -> list[Path]:
    """One PNG per track: `path` itself for one face, `<stem>_face<id>.png` for several.

    A face-free analysis writes a small PNG saying so, so that the file a user
    asked for exists.
    """
    p = _check_dest(path)
    if analysis.no_face:
        fig = Figure(figsize=(6, 1.5), dpi=DPI)
        FigureCanvasAgg(fig)
        fig.text(0.5, 0.5, f"No face found in {analysis.source.name}", ha="center", va="center")
        fig.savefig(p, format="png")
        return [p]
    if len(analysis.tracks) == 1:
        return [plot_track(analysis, analysis.tracks[0].track_id, p)]
    suffix = p.suffix or ".png"
    return [plot_track(analysis, tr.track_id, p.with_name(f"{p.stem}_face{tr.track_id}{suffix}"))
            for tr in analysis.tracks]
