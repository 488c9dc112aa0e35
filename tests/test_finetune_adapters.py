"""Readers for public formats (finetune/data/adapters.py), on small files written here
in each format and pointing at the real test media."""

from __future__ import annotations

import json
import shutil

import pytest

from finetune.data import adapters
from finetune.data.builder import TrainingDataError


@pytest.fixture(scope="module")
def files(tmp_path_factory, media):
    d = tmp_path_factory.mktemp("formats")
    smile, surprise = media("0-f15-hao-ph.jpg"), media("0-f1-su-ph.jpg")
    video = media("single_face.mp4")
    (d / "test.json").write_text(json.dumps([
        {"id": "v1", "video": str(video),
         "caption": "At the beginning, the man looks calm. As the video progresses, he breaks into a "
                    "broad smile. Towards the end, he is still smiling happily."}]))
    (d / "fea.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"id": "f1", "dataset": "RAF-DB", "image": str(smile), "question": "Why is she happy?",
         "AUs": ["AU6", "AU12", "AU25"], "labels": ["happy"], "description": "cheeks raised"},
        {"id": "f2", "dataset": "RAF-DB", "image": str(surprise), "question": "What emotion?",
         "AUs": [1, 2, 26], "labels": "surprise", "description": "brows up"}]))
    (d / "expllm.json").write_text(json.dumps([
        {"file_name": str(smile), "emo": "Happiness", "au": "AU6, AU12", "description": "smile"}]))
    folder = d / "faces"
    (folder / "happy").mkdir(parents=True)
    (folder / "surprise").mkdir()
    shutil.copy(smile, folder / "happy" / "a.jpg")
    shutil.copy(surprise, folder / "surprise" / "b.jpg")
    (d / "dfew.csv").write_text(f"video,label,subject\n{video},1,s01\n")
    (d / "images.csv").write_text(f"path,label\n{smile},happy\n{surprise},Surprise\n")
    return d


def test_readers_parse_every_format(files):
    (fec,) = adapters.read("fec-bench", files / "test.json")
    assert fec.label == "happiness" and fec.caption.startswith("At the beginning")
    fea = adapters.read("fea-20k", files / "fea.jsonl")
    assert [i.label for i in fea] == ["happiness", "surprise"]
    assert fea[0].aus == ["AU06", "AU12", "AU25"] and fea[1].aus == ["AU01", "AU02", "AU26"]
    assert fea[0].question == "Why is she happy?" and fea[0].source == "fea-20k/RAF-DB"
    (exp,) = adapters.read("expllm", files / "expllm.json")
    assert exp.label == "happiness" and exp.aus == ["AU06", "AU12"]
    folder = adapters.read("image-folder", files / "faces")
    assert sorted(i.label for i in folder) == ["happiness", "surprise"]
    (dfew,) = adapters.read("csv", files / "dfew.csv")
    assert dfew.label == "happiness" and dfew.identity == "s01" and dfew.source == "video-csv"
    assert [i.label for i in adapters.read("csv", files / "images.csv")] == ["happiness", "surprise"]


def test_bad_files_name_the_problem(files, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "image": "x.jpg"}\n')
    with pytest.raises(TrainingDataError, match="line 1: missing field"):
        adapters.read("fea-20k", bad)
    csvf = tmp_path / "x.csv"
    csvf.write_text("foo,bar\n1,2\n")
    with pytest.raises(TrainingDataError, match="path column"):
        adapters.read("csv", csvf)
    with pytest.raises(TrainingDataError, match="unknown data format"):
        adapters.read("coco", csvf)
    (tmp_path / "n.csv").write_text("path,label\na.mp4,9\n")
    with pytest.raises(TrainingDataError, match="numeric label 9"):
        adapters.read("csv", tmp_path / "n.csv")


@pytest.mark.slow
def test_build_dataset_analyses_once_and_caches(files, tmp_path, monkeypatch):
    items = (adapters.read("fea-20k", files / "fea.jsonl") + adapters.read("fec-bench", files / "test.json"))
    cache = tmp_path / "cache"
    dsd = adapters.build_dataset(items, cache, fps=4.0, test_share=0.0)
    rows = list(dsd["train"])
    # One decision per face; each data set question becomes one follow-up answer row.
    assert sorted(r["id"] for r in rows if r["kind"] == "decide") == ["f1", "f2", "v1"]
    assert sorted(r["id"] for r in rows if r["kind"] == "answer") == ["f1_q1", "f2_q1"]
    assert len(list(cache.glob("*.json"))) == 3
    by_id = {r["id"]: r for r in rows}
    # The question travels into the answer prompt; the data set's caption sets the arc.
    assert "Why is she happy?" in by_id["f1_q1"]["messages"][-2]["content"]
    assert json.loads(by_id["f1_q1"]["messages"][-1]["content"])["label"] == "happiness"
    assert json.loads(by_id["v1"]["messages"][-1]["content"])["label"] == "happiness"
    assert by_id["v1"]["segment_order"] == ["neutral", "happiness"]
    # A second build reads the cache: the same analyses, no new files.
    stamps = {p: p.stat().st_mtime_ns for p in cache.glob("*.json")}
    again = adapters.build_dataset(items, cache, fps=4.0, test_share=0.0)
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*.json")} == stamps
    assert sorted(again["train"]["analysis"]) == sorted(dsd["train"]["analysis"])
    # New measurement code is a new key: the analyses are made again, never reused stale.
    import tools

    monkeypatch.setattr(tools, "measurement_fingerprint", lambda: "0" * 12)
    adapters.build_dataset(items, cache, fps=4.0, test_share=0.0)
    assert len(list(cache.glob("*.json"))) == 6


def test_the_measurement_fingerprint_follows_the_emfacs_table(tmp_path, monkeypatch):
    import prompts
    import tools

    shutil.copytree(prompts.ROOT, tmp_path / "prompts")
    monkeypatch.setattr(prompts, "ROOT", tmp_path / "prompts")
    first = tools.measurement_fingerprint.__wrapped__()
    assert first == tools.measurement_fingerprint.__wrapped__() and len(first) == 12
    emfacs = tmp_path / "prompts" / "emfacs.yaml"
    emfacs.write_text(emfacs.read_text() + "\n# one more comment\n")
    assert tools.measurement_fingerprint.__wrapped__() != first
