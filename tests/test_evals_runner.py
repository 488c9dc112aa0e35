"""The runners and `facereason eval`: FEC test.json round trip, resume, emotion/AU/explanation sets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from agent.cli import main
from evals.classification import emotion_metrics, explanation_metrics, icc_3_1
from evals.fec import load_references, run_fec
from evals.offline_judge import OfflineJudge
from tools.errors import FaceReasonError

REFS = [
    {"id": "v1", "video": "dfew/v1.mp4", "caption": (
        "At the beginning, the woman looks down with a neutral expression. As the video progresses, "
        "she raises her eyebrows and her eyes widen. Towards the end, she smiles broadly and nods.")},
    {"id": "v2", "video": "caer/v2.avi", "caption": (
        "At first, the man frowns and presses his lips together. Then he shakes his head. "
        "Towards the end, he crosses his arms, looking angry.")},
    {"id": "v3", "video": "mafw/v3.mp4", "caption": (
        "At the beginning, the girl cries. In the middle, she wipes her tears. "
        "Towards the end, she laughs openly.")},
]


@pytest.fixture(scope="module")
def judge():
    return OfflineJudge()


def _write(tmp_path, preds):
    ref = tmp_path / "test.json"
    ref.write_text(json.dumps(REFS))
    pred = tmp_path / "pred.jsonl"
    pred.write_text("".join(json.dumps({"id": k, "caption": v}) + "\n" for k, v in preds.items()))
    return ref, pred


def test_fec_runner_round_trip_and_resume(tmp_path, judge):
    preds = {"v1": REFS[0]["caption"], "v2": "The man smiles happily."}  # v3 has no prediction
    ref, pred = _write(tmp_path, preds)
    refs = load_references(ref)
    assert [r["video"] for r in refs] == ["dfew/v1.mp4", "caer/v2.avi", "mafw/v3.mp4"]
    out = tmp_path / "out"
    seen = []
    res = run_fec(preds, refs, judge, out_dir=out, workers=2, progress=False, on_item=seen.append)
    assert sorted(r["id"] for r in seen) == ["v1", "v2", "v3"]
    data = json.loads((out / "results.json").read_text())
    assert [i["id"] for i in data["items"]] == ["v1", "v2", "v3"]
    for item in data["items"]:
        assert {"autodq", "tem", "rouge_l", "cider", "evidence"} <= set(item)
        assert {"pred_events", "ref_events", "recall_relations", "tem_lcs"} <= set(item["evidence"])
    by_id = {i["id"]: i for i in data["items"]}
    assert by_id["v1"]["autodq"] == 1.0 and by_id["v1"]["tem"] == 1.0
    assert by_id["v3"]["autodq"] == 0.0 and data["missing"] == ["v3"]
    assert by_id["v1"]["cider"] > by_id["v2"]["cider"]
    assert data["summary"]["n"] == 3 and res["summary"]["autodq"] == data["summary"]["autodq"]
    report = (out / "report.md").read_text()
    assert "| AutoDQ |" in report and "v3" in report
    rows = {line.split(" | ")[0].lstrip("| ") for line in report.splitlines() if line.startswith("| v")}
    assert rows == {"v1", "v2", "v3"}  # one row per item
    Image.open(out / "scores.png").verify()
    # a rerun scores nothing again; a changed prediction is scored again, alone
    seen.clear()
    run_fec(preds, refs, judge, out_dir=out, progress=False, on_item=seen.append)
    assert seen == []
    preds["v2"] = REFS[1]["caption"]
    again = run_fec(preds, refs, judge, out_dir=out, progress=False, on_item=seen.append)
    assert [r["id"] for r in seen] == ["v2"]
    assert again["items"][1]["autodq"] == 1.0


def test_a_missing_caption_scores_zero_even_where_the_reference_has_no_events(judge):
    # The offline extractor finds no event in "Someone frowns."; by the metrics' own rule an
    # empty side then scores 1.0, so a missing caption used to score a perfect 1.0 there.
    from evals.fec import score_item

    for ref in ("Someone frowns.", REFS[2]["caption"]):
        row = score_item("x", "", ref, judge)
        assert row["autodq"] == row["tem"] == row["autodq_recall"] == row["tem_recall"] == 0.0


def test_cli_eval_fec_offline(tmp_path, capsys):
    ref, pred = _write(tmp_path, {r["id"]: r["caption"] for r in REFS})
    assert main(["eval", "fec", "--ref", str(ref), "--pred", str(pred), "--out", str(tmp_path / "o")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["autodq"] == 1.0 and summary["tem"] == 1.0 and summary["n"] == 3
    assert (tmp_path / "o" / "results.json").is_file()


def test_cli_eval_errors_are_sentences(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": 1, "video": "x.mp4"}]))
    pred = tmp_path / "p.jsonl"
    pred.write_text("")
    assert main(["eval", "fec", "--ref", str(bad), "--pred", str(pred)]) == 2
    assert "needs \"id\" and a \"caption\"" in capsys.readouterr().err
    assert main(["eval", "fec", "--ref", str(tmp_path / "nope.json"), "--pred", str(pred)]) == 2
    assert "does not exist" in capsys.readouterr().err
    ref, _ = _write(tmp_path, {})
    assert main(["eval", "fec", "--ref", str(ref), "--pred", str(pred), "--judge", "llm"]) == 2
    assert "--base-url" in capsys.readouterr().err


def test_emotion_metrics_by_hand():
    m = emotion_metrics(["happy", "happy", "happy", "sad"], ["happiness", "happy", "sad", "sadness"])
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["uar"] == pytest.approx((2 / 3 + 1) / 2)  # recalls: happiness 2/3, sadness 1
    assert m["war"] == pytest.approx(0.75)
    assert m["confusion"] == [[2, 1], [0, 1]] and m["labels"] == ["happiness", "sadness"]
    with pytest.raises(FaceReasonError, match="pair up"):
        emotion_metrics(["a"], [])


def test_cli_eval_emotion_csv_and_png(tmp_path, capsys):
    data = tmp_path / "set.csv"
    data.write_text("clip1.mp4,happy,happy\nclip2.mp4,sad,angry\nclip3.mp4,angry,angry\nclip4.mp4,sad,sad\n")
    assert main(["eval", "emotion", "--data", str(data), "--out", str(tmp_path / "e")]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["n"] == 4 and s["accuracy"] == pytest.approx(0.75) and s["uar"] == pytest.approx(5 / 6)
    with Image.open(tmp_path / "e" / "confusion.png") as im:
        assert im.size[0] > 100
    assert "UAR" in (tmp_path / "e" / "report.md").read_text()


def test_icc_reproduces_shrout_fleiss_example():
    # Shrout & Fleiss (1979), Table 2: 6 targets, 4 judges; they report ICC(3,1) = .71
    x = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])
    assert icc_3_1(x) == pytest.approx(0.71, abs=0.005)


def test_cli_eval_au(tmp_path, capsys):
    rows = [{"id": i, "AU12_r": t, "pred_AU12_r": p, "AU04_c": c, "pred_AU04_c": q}
            for i, (t, p, c, q) in enumerate([(0, 0.2, 0, 0), (2, 1.5, 1, 1), (4, 3.5, 1, 0), (1, 1.2, 0, 0)])]
    data = tmp_path / "au.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["eval", "au", "--data", str(data), "--out", str(tmp_path / "a")]) == 0
    s = json.loads(capsys.readouterr().out)
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    assert res["per_au"]["AU04"]["f1"] == pytest.approx(2 / 3)  # tp 1, fn 1, fp 0
    assert res["per_au"]["AU12"]["f1"] == pytest.approx(1.0)  # occurrence from intensity >= 1
    assert 0.9 < res["per_au"]["AU12"]["pearson"] <= 1.0 and 0.8 < res["per_au"]["AU12"]["icc31"] <= 1.0
    assert res["per_au"]["AU12"]["spearman"] == pytest.approx(1.0)  # same order of the four items
    assert s["n"] == 4


def test_explanation_metrics():
    good = {"conclusion": {"label": "happiness", "confidence": 0.8},
            "key_observations": [{"au": "AU12"}, {"au": "AU06"}], "caption": "She smiles."}
    recs = [dict(good, observed_aus=["AU12", "AU06"]), dict(good, observed_aus=["AU12"], fallback_used=True),
            {"text": "no layout at all"}]
    m = explanation_metrics(recs)
    assert m["format_validity"] == pytest.approx(2 / 3)
    assert m["faithfulness"] == pytest.approx(0.75) and m["fully_faithful_share"] == pytest.approx(0.5)
    assert m["fallback_rate"] == pytest.approx(0.5)
    assert m["items"][1]["unfaithful"] == ["AU06"]
