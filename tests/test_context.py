"""Tests for tools.torchvision_compat and tools.context (CLIP context scoring)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


# ------------------------------------------------------------ torchvision_compat
@pytest.mark.slow
def test_torchvision_compat_makes_clip_peft_trl_importable():
    code = """
import json
from tools import torchvision_compat
state = torchvision_compat.ensure()
again = torchvision_compat.ensure()
import open_clip, peft, torch, torchvision
from trl import SFTTrainer
err = None
if state == "stubbed":
    try:
        torch.ops.torchvision.nms(torch.zeros(2, 4), torch.zeros(2), 0.5)
    except RuntimeError as e:
        err = str(e)
print(json.dumps({"state": state, "again": again, "err": err,
                  "trainer": SFTTrainer.__name__, "clip": open_clip.__version__}))
"""
    p = _run(code)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["state"] in {"native", "stubbed"}
    assert out["again"] == out["state"]
    assert out["trainer"] == "SFTTrainer"
    if out["state"] == "stubbed":
        # The stubbed op must fail loudly and say why, not return garbage.
        assert out["err"] and "unavailable" in out["err"] and "torchvision" in out["err"]
        # And the trap is real here: without ensure(), torchvision does not import.
        bare = _run("import torchvision")
        assert bare.returncode != 0 and "torchvision::nms" in bare.stderr


# ------------------------------------------------------------------- context
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """(reference model, its preprocess, folder in hub layout, lone weights file, arch name)."""
    from tiny_models import tiny_clip as build

    return build(tmp_path_factory.mktemp("tinyclip"))


@pytest.fixture(scope="module")
def photos(media):
    from PIL import Image

    names = ["single_face.jpg", "multi_face.jpg", "0-f1-su-ph.jpg"]
    return [np.asarray(Image.open(media(n)).convert("RGB")) for n in names]


def _reference_probs(model, preprocess, images, prompts):
    """Independent CLIP zero-shot computation with open_clip's own calls."""
    import open_clip
    import torch
    from PIL import Image

    tok = open_clip.get_tokenizer("FR-tiny-clip")
    with torch.no_grad():
        x = torch.stack([preprocess(Image.fromarray(im)) for im in images])
        fi = model.encode_image(x, normalize=True)
        ft = model.encode_text(tok(prompts), normalize=True)
        return (model.logit_scale.exp() * fi @ ft.T).softmax(dim=-1).numpy()


def test_checkpoint_folder_and_file_load_the_same_weights(tiny_clip, photos):
    from tools import context

    model, preprocess, folder, lone, arch = tiny_clip
    prompts = ["a photo of a happy face", "a photo of a sad face", "a photo of a dog"]
    ref = _reference_probs(model, preprocess, photos, prompts)
    for scorer in (context.load_clip(checkpoint=str(folder)),
                   context.load_clip(model=arch, checkpoint=str(lone))):
        assert isinstance(scorer, context.ClipScorer)
        p = scorer.score(photos, prompts)
        assert p.shape == (len(photos), len(prompts))
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(p, ref, atol=1e-5)
    # A random model still separates inputs: different photos, different scores.
    assert np.abs(ref[0] - ref[1]).max() > 1e-4


def test_score_context_averages_over_frames(tiny_clip, photos):
    from tools import context
    from tools.facs import EMOTIONS

    model, preprocess, folder, _, _ = tiny_clip
    scorer = context.load_clip(checkpoint=str(folder))
    cfg = context.load_prompts()
    faces = [im[: im.shape[0] // 2, : im.shape[1] // 2] for im in photos[:2]]
    res = context.score_context(photos, faces, scorer=scorer)
    assert res.status == "ok" and res.model == scorer.name
    scene_ref = _reference_probs(model, preprocess, photos, list(cfg["scene"].values())).mean(0)
    top = np.argsort(-scene_ref)[: cfg["top_scene"]]
    labels = list(cfg["scene"])
    assert list(res.scene) == [labels[i] for i in top]
    np.testing.assert_allclose(list(res.scene.values()), scene_ref[top], atol=1e-4)
    assert set(res.face) == set(EMOTIONS) == set(cfg["emotions"])
    face_ref = _reference_probs(model, preprocess, faces, list(cfg["emotions"].values())).mean(0)
    np.testing.assert_allclose([res.face[k] for k in cfg["emotions"]], face_ref, atol=1e-4)
    assert res.message.startswith("context (")


def test_user_label_set_with_descriptions(tiny_clip, photos):
    from tools import context

    model, preprocess, folder, _, _ = tiny_clip
    scorer = context.load_clip(checkpoint=str(folder))
    labels = ["pain", "effort: a photo of a person straining with effort", "boredom"]
    res = context.score_context([], photos[:1], scorer=scorer, label_set=labels)
    assert res.scene == {} and set(res.face) == {"pain", "effort", "boredom"}
    template = context.load_prompts()["label_template"]
    prompts = [template.format(label="pain"), "a photo of a person straining with effort",
               template.format(label="boredom")]
    ref = _reference_probs(model, preprocess, photos[:1], prompts)[0]
    np.testing.assert_allclose([res.face["pain"], res.face["effort"], res.face["boredom"]],
                               ref, atol=1e-4)
    with pytest.raises(context.FaceReasonError, match="label set"):
        context.score_context([], photos[:1], scorer=scorer, label_set=["ok", ""])


def test_bad_inputs_and_bad_checkpoints_say_what_is_wrong(tiny_clip, tmp_path, monkeypatch):
    from tools import context

    _, _, folder, _, _ = tiny_clip
    scorer = context.load_clip(checkpoint=str(folder))
    with pytest.raises(context.FaceReasonError, match=r"shape \(H, W, 3\)"):
        scorer.score([np.zeros((4, 4, 7), np.uint8)], ["a face"])
    # Grey and float [0, 1] images are accepted as the same picture.
    grey = (np.arange(64 * 64) % 251).reshape(64, 64).astype(np.uint8)
    a = scorer.score([grey], ["a face", "a dog"])
    b = scorer.score([np.repeat(grey[:, :, None], 3, 2).astype(np.float32) / 255], ["a face", "a dog"])
    np.testing.assert_allclose(a, b, atol=1e-4)
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(context.ContextUnavailable, match="does not exist"):
        context.load_clip(checkpoint=str(missing))
    with pytest.raises(context.ContextUnavailable, match="open_clip_config.json"):
        context.load_clip(checkpoint=str(tmp_path))
    monkeypatch.setenv(context.CHECKPOINT_ENV, str(missing))
    res = context.score_context([grey], [])
    assert res.status == "unavailable" and str(missing) in res.message
    monkeypatch.setenv(context.CHECKPOINT_ENV, str(folder))
    res = context.score_context([grey], [])
    assert res.status == "ok" and res.scene and res.face == {}


def test_offline_default_is_unavailable_with_instructions(tmp_path):
    env_code = """
import json, time
import numpy as np
from tools import context
t = time.perf_counter()
res = context.score_context([np.zeros((8, 8, 3), np.uint8)], [])
print(json.dumps({"res": res.model_dump(), "none": context.load_clip() is None,
                  "s": time.perf_counter() - t}))
"""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEREASON_CLIP")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    p = subprocess.run([sys.executable, "-c", env_code], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["none"] is True
    res = out["res"]
    assert res["status"] == "unavailable" and res["scene"] == {} and res["face"] == {}
    assert res["message"].startswith("context: unavailable (no CLIP weights")
    assert "how to get them" in res["message"] and "FACEREASON_CLIP_CHECKPOINT" in res["message"]
    assert "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in res["message"]


def test_analyze_scores_context_when_a_checkpoint_is_configured(tiny_clip, media, monkeypatch):
    """The pipeline keeps a few frames and face crops and hands them to CLIP."""
    from tools import context
    from tools.pipeline import analyze

    monkeypatch.setenv("FACEREASON_CLIP_CHECKPOINT", str(tiny_clip[2]))
    a = analyze(media("single_face.mp4"))
    assert a.context.status == "ok", a.context.message
    assert a.context.scene and a.context.face
    assert set(a.context.face) <= set(context.load_prompts()["emotions"])
    assert abs(sum(a.context.face.values()) - 1.0) < 1e-3
    monkeypatch.delenv("FACEREASON_CLIP_CHECKPOINT")
    b = analyze(media("single_face.jpg"), scene_context=False)
    assert b.context.status == "off"
