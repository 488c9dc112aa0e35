"""tools.plots: PNGs are written, and what they draw is the track's data."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.collections import QuadMesh
from PIL import Image
from test_timeline import AU05, AU12, HAP, STEP, SUR, K, analysis_of, emotion_matrix, make_track

from tools.errors import FaceReasonError
from tools.plots import plot_analysis, plot_track, track_figure
from tools.timeline import annotate, smooth


@pytest.fixture(scope="module")
def gappy():
    """A face seen 0-4 s and 5.5-8 s, covered for a while, with a smile and a burst."""
    rng = np.random.default_rng(3)
    t = np.concatenate([np.arange(0, 4, STEP), np.arange(5.5, 8, STEP)])
    E = emotion_matrix(t, [(1.0, 3.0, HAP, 0.85), (6.0, 6.3, SUR, 0.8)])
    A = rng.uniform(0, 0.3, (len(t), K))
    A[:, AU12] += np.clip(3.5 - np.abs(t - 2.0) * 3, 0, None)
    A[(t >= 6.0) & (t < 6.3), AU05] = 2.0
    occ = ((t > 7.0) & (t < 7.5)).astype(float)
    tr = make_track(t, E, A, occlusion=occ, valence=E[:, HAP] - 0.2, arousal=E[:, SUR])
    return annotate(analysis_of(tr))


def _heatmap(fig):
    meshes = [c for ax in fig.axes for c in ax.collections
              if isinstance(c, QuadMesh) and c.get_gid() == "au_heatmap"]
    assert len(meshes) == 1
    return meshes[0]


def test_png_written_and_heatmap_is_the_au_matrix(gappy, tmp_path):
    tr = gappy.tracks[0]
    out = plot_analysis(gappy, tmp_path / "face.png")
    assert out == [tmp_path / "face.png"]
    with Image.open(out[0]) as im:
        assert im.format == "PNG" and 1000 <= im.width <= 2000 and 700 <= im.height <= 2000

    fig = track_figure(gappy, tr.track_id)
    mesh = _heatmap(fig)
    grid = np.ma.getdata(mesh.get_array()).reshape(len(gappy.au_codes), -1)
    masked = np.ma.getmaskarray(mesh.get_array()).reshape(grid.shape)
    # One empty column for the gap; every other column is a frame, in order.
    frame_cols = ~masked.all(axis=0)
    assert frame_cols.sum() == tr.n and (~frame_cols).sum() == 1
    np.testing.assert_allclose(grid[:, frame_cols], np.asarray(tr.aus).T, atol=1e-6)
    x_edges = mesh.get_coordinates()[0, :, 0]
    np.testing.assert_allclose(x_edges[:-1][frame_cols], tr.timestamps, atol=1e-5)
    # The y axis names each AU.
    heat_ax = next(ax for ax in fig.axes if mesh in ax.collections)
    ticks = [tk.get_text() for tk in heat_ax.get_yticklabels()]
    assert ticks[gappy.au_codes.index("AU12")] == "AU12 lip corner puller"
    # AU events are outlined where they are, the brief one dashed.
    rects = {(round(p.get_x(), 3), round(p.get_y())): p for p in heat_ax.patches
             if (p.get_gid() or "").startswith("au_event:")}
    assert len(rects) == len(tr.events)
    for ev in tr.events:
        p = rects[(round(ev.onset, 3), gappy.au_codes.index(ev.au))]
        assert p.get_width() == pytest.approx(ev.offset - ev.onset, abs=1e-6)
        assert (p.get_linestyle() == "--") == ev.micro
    assert any(ev.micro for ev in tr.events)


def test_emotion_lines_are_the_smoothed_probabilities(gappy):
    tr = gappy.tracks[0]
    fig = track_figure(gappy, tr.track_id)
    P = smooth(tr.emotions, tr.timestamps)
    lines = [ln for ax in fig.axes for ln in ax.lines if (ln.get_gid() or "").startswith("emotion:")]
    for j, lab in enumerate(gappy.emotion_labels):
        mine = [ln for ln in lines if ln.get_gid() == f"emotion:{lab}"]
        assert len(mine) == 2  # one line per observed stretch: the gap is not bridged
        x = np.concatenate([ln.get_xdata() for ln in mine])
        y = np.concatenate([ln.get_ydata() for ln in mine])
        np.testing.assert_allclose(x, tr.timestamps, atol=1e-6)
        np.testing.assert_allclose(y, P[:, j], atol=1e-6)
    emo_ax = next(ax for ax in fig.axes if any(ln in ax.lines for ln in lines))
    names = {t.get_text() for t in emo_ax.texts}
    assert "happiness" in names and "not visible" in names


def test_several_faces_get_one_file_each(gappy, tmp_path):
    t1 = gappy.tracks[0]
    t2 = t1.model_copy(update={"track_id": 2, "segments": [], "events": [], "summary": None})
    an = analysis_of(t1, t2)
    out = plot_analysis(an, tmp_path / "run.png")
    assert [p.name for p in out] == ["run_face1.png", "run_face2.png"]
    assert all(p.stat().st_size > 10_000 for p in out)
    # The un-annotated copy is drawn from a timeline computed on the fly: same events.
    fig = track_figure(an, 2)
    heat_ax = next(ax for ax in fig.axes if _heatmap(fig) in ax.collections)
    outlines = sorted((round(p.get_x(), 3), round(p.get_y())) for p in heat_ax.patches
                      if (p.get_gid() or "").startswith("au_event:"))
    assert outlines == sorted((e.onset, an.au_codes.index(e.au)) for e in t1.events)


def test_still_image_bars(tmp_path):
    E = emotion_matrix(np.zeros(1), [(0, 1, HAP, 0.7)])
    A = np.zeros((1, K))
    A[0, AU12] = 3.2
    an = annotate(analysis_of(make_track([0.0], E, A)))
    fig = track_figure(an, 1)
    au_ax, emo_ax = fig.axes[:2]
    np.testing.assert_allclose([p.get_width() for p in au_ax.patches], A[0], atol=1e-6)
    np.testing.assert_allclose([p.get_width() for p in emo_ax.patches], E[0], atol=1e-6)
    p = plot_track(an, 1, tmp_path / "still.png")
    with Image.open(p) as im:
        assert im.format == "PNG" and im.width > 600


def test_no_face_and_bad_destinations(gappy, tmp_path):
    from tools.analysis import Analysis, Sampling

    empty = Analysis(source=gappy.source, sampling=Sampling())
    out = plot_analysis(empty, tmp_path / "none.png")
    with Image.open(out[0]) as im:
        assert im.format == "PNG"
    with pytest.raises(FaceReasonError, match="does not exist"):
        plot_analysis(gappy, tmp_path / "missing" / "x.png")
    with pytest.raises(FaceReasonError, match="is a folder"):
        plot_analysis(gappy, tmp_path)
    with pytest.raises(FaceReasonError, match="no face track 9"):
        plot_track(gappy, 9, tmp_path / "x.png")


@pytest.mark.slow
def test_real_video_plot(analyses, tmp_path):
    an = analyses("single_face.mp4")
    tr = an.tracks[0]
    assert tr.aus is not None and tr.emotions is not None
    out = plot_analysis(an, tmp_path / "real.png")
    with Image.open(out[0]) as im:
        assert im.format == "PNG" and im.height > 500
    mesh = _heatmap(track_figure(an, tr.track_id))
    grid = np.ma.getdata(mesh.get_array()).reshape(len(an.au_codes), -1)
    cols = ~np.ma.getmaskarray(mesh.get_array()).reshape(grid.shape).all(axis=0)
    np.testing.assert_allclose(grid[:, cols], np.asarray(tr.aus).T, atol=1e-6)
