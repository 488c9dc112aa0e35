"""`facereason batch` on a local 2-worker Ray cluster, with real media: results as the serial
path computes them, error rows for bad inputs, a killed worker's input retried, reruns skip."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import ray
from openai_server import OpenAITestServer

from agent import batch
from agent import cluster as ray_cluster
from agent.commands import result_json
from tools import analyze, assets
from tools.commands import analysis_json
from tools.errors import MediaError, user_message

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # a Ray cluster and real media: about a minute on 2 cores


def _no_timings(obj):
    """A result without its timings (the one part that differs from run to run)."""
    if isinstance(obj, dict):
        return {k: _no_timings(v) for k, v in obj.items() if k != "timings"}
    if isinstance(obj, list):
        return [_no_timings(v) for v in obj]
    return obj


def _read_index(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _by_name(rows) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in rows}


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster with 2 CPUs for the whole file (the command's own helper)."""
    with ray_cluster.cluster(workers=2):
        yield


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, media):
    """A folder of real media, a text file named .mp4 in a subfolder, a file that is not media,
    and a manifest beside it naming one of the files again and a missing one."""
    root = tmp_path_factory.mktemp("dataset")
    data = root / "data"
    (data / "sub").mkdir(parents=True)
    for name in ("single_face.mp4", "single_face.jpg", "no_face.mp4"):
        shutil.copy(media(name), data / name)
    (data / "sub" / "x.mp4").write_text("this is not a video\n")
    (data / "notes.txt").write_text("not media: a folder search leaves it out\n")
    manifest = root / "labels.csv"
    manifest.write_text("path,subject\ndata/single_face.jpg,s1\ndata/missing.mp4,s2\n")
    return data, manifest


def test_a_jsonl_manifest_keeps_its_columns_and_a_bad_one_is_a_sentence(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"path": "a.mp4", "label": "happy", "path2": 3}\n\n'
                                      '{"path": "b/c.jpg", "status": "train"}\n')
    a, c = batch.collect([tmp_path / "m.jsonl", tmp_path / "a.mp4"])
    assert (a.path, a.extra) == (tmp_path / "a.mp4", {"label": "happy", "path2": 3})
    assert (c.path, c.extra) == (tmp_path / "b" / "c.jpg", {"manifest_status": "train"})
    for name, text, words in [("n.jsonl", '{"path": "a.mp4"}\nnot json\n', "line 2: not valid JSON"),
                              ("p.csv", "file,label\na.mp4,x\n", "entry 1 has no 'path'")]:
        (tmp_path / name).write_text(text)
        with pytest.raises(batch.FaceReasonError, match=words) as exc:
            batch.collect([tmp_path / name])
        assert user_message(exc.value) == str(exc.value)


@pytest.fixture(scope="module")
def first_run(cluster, dataset, tmp_path_factory):
    data, manifest = dataset
    out = tmp_path_factory.mktemp("out")
    summary = batch.run_batch([data, manifest], out, workers=2, progress=False)
    return out, summary


def test_one_index_row_per_input_with_the_manifest_columns(first_run, dataset):
    out, summary = first_run
    rows = _read_index(out / "index.csv")
    assert [r["path"] for r in rows] == [str(r["path"]) for r in summary.rows]
    names = _by_name(rows)
    assert sorted(names) == ["missing.mp4", "no_face.mp4", "single_face.jpg", "single_face.mp4",
                             "x.mp4"]
    assert list(rows[0])[:8] == batch.COLUMNS and "subject" in rows[0]
    assert names["single_face.jpg"]["subject"] == "s1" and names["missing.mp4"]["subject"] == "s2"
    assert names["single_face.mp4"]["subject"] == ""
    assert (summary.done, summary.skipped, summary.errors) == (4, 0, 2)
    for r in rows:
        if r["status"] == "ok":
            assert (out / r["result"]).is_file()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("name", ["single_face.mp4", "single_face.jpg", "no_face.mp4"])
def test_results_are_what_the_serial_path_computes(first_run, analyses, name):
    out, _ = first_run
    row = _by_name(_read_index(out / "index.csv"))[name]
    serial = analyses(name)
    assert row["status"] == "ok"
    assert int(row["faces"]) == len(serial.tracks)
    assert row["dominant_emotion"] == ";".join(t.summary.dominant_emotion for t in serial.tracks)
    stored = json.loads((out / row["result"]).read_text())
    assert _no_timings(stored) == _no_timings(json.loads(analysis_json(serial)))


def test_bad_missing_and_face_free_inputs_are_rows(first_run, dataset):
    out, _ = first_run
    data, _ = dataset
    rows = _by_name(_read_index(out / "index.csv"))
    with pytest.raises(MediaError) as bad:
        analyze(data / "sub" / "x.mp4")
    assert rows["x.mp4"]["status"] == "error"
    assert (rows["x.mp4"]["code"], rows["x.mp4"]["message"]) == (bad.value.code,
                                                                 user_message(bad.value))
    assert rows["missing.mp4"]["status"] == "error" and rows["missing.mp4"]["code"] == "not_found"
    assert "missing.mp4" in rows["missing.mp4"]["message"]
    free = rows["no_face.mp4"]
    assert (free["status"], free["faces"], free["dominant_emotion"]) == ("ok", "0", "")


def test_a_rerun_computes_nothing_twice(first_run, dataset):
    out, first = first_run
    data, manifest = dataset
    results = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "index.csv"}
    assert len(results) == 4  # three results and x.mp4's stored error
    again = batch.run_batch([data, manifest], out, workers=2, progress=False)
    assert (again.done, again.skipped, again.errors) == (0, 4, 2)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "index.csv"} == results
    assert again.rows == first.rows
    assert [r["path"] for r in _read_index(out / "index.csv")] == [r["path"] for r in first.rows]


def _killer(target: Path, killed: list[int]):
    """An on_submit hook: once `target` is being analysed (the actor's status says so), SIGKILL
    that actor's process, from a thread so the run goes on."""
    threads = []

    def on_submit(item, actor):
        if item.path.name != target.name or killed:
            return

        def kill():
            while True:
                status = ray.get(actor.status.remote())
                if status["current"] == str(item.path):
                    os.kill(status["pid"], signal.SIGKILL)
                    killed.append(status["pid"])
                    return
                time.sleep(0.01)

        threads.append(threading.Thread(target=kill, daemon=True))
        threads[-1].start()

    return on_submit, threads


def test_a_worker_killed_mid_input_is_restarted_and_the_input_retried(cluster, dataset, first_run,
                                                                        tmp_path):
    data, _ = dataset
    video = data / "single_face.mp4"
    killed: list[int] = []
    hook, threads = _killer(video, killed)
    summary = batch.run_batch([video, data / "single_face.jpg"], tmp_path, workers=2,
                              progress=False, on_submit=hook)
    for t in threads:
        t.join(timeout=60)
    assert len(killed) == 1
    rows = _by_name(_read_index(tmp_path / "index.csv"))
    assert sorted(rows) == ["single_face.jpg", "single_face.mp4"]
    assert rows["single_face.mp4"]["status"] == "ok", rows["single_face.mp4"]
    assert (summary.done, summary.errors) == (2, 0)
    # The retried input's result is the one the undisturbed first run computed.
    out, _ = first_run
    before = _by_name(_read_index(out / "index.csv"))["single_face.mp4"]["result"]
    assert rows["single_face.mp4"]["result"] == before
    assert _no_timings(json.loads((tmp_path / before).read_text())) == \
        _no_timings(json.loads((out / before).read_text()))


def test_a_worker_that_dies_past_its_retries_is_an_error_row_and_a_rerun_tries_again(
        cluster, dataset, tmp_path):
    data, _ = dataset
    video = data / "single_face.mp4"
    killed: list[int] = []
    hook, threads = _killer(video, killed)
    summary = batch.run_batch([video, data / "single_face.jpg"], tmp_path, workers=2,
                              progress=False, retries=0, on_submit=hook)
    for t in threads:
        t.join(timeout=60)
    assert len(killed) == 1
    rows = _by_name(_read_index(tmp_path / "index.csv"))
    died = rows["single_face.mp4"]
    assert (died["status"], died["code"], died["result"]) == ("error", batch.WORKER_DIED, "")
    assert "single_face.mp4" in died["message"] and "died" in died["message"]
    assert rows["single_face.jpg"]["status"] == "ok" and summary.errors == 1
    again = batch.run_batch([video, data / "single_face.jpg"], tmp_path, workers=2, progress=False)
    assert (again.done, again.skipped, again.errors) == (1, 1, 0)
    assert _by_name(again.rows)["single_face.mp4"]["status"] == "ok"


def test_explain_results_are_what_explain_json_writes(cluster, dataset, tmp_path):
    from agent import explain

    still = dataset[0] / "single_face.jpg"
    summary = batch.run_batch([still], tmp_path, batch.Settings(explain=True), workers=1,
                              want_csv=True, progress=False)
    [row] = summary.rows
    assert row["status"] == "ok" and row["faces"] == 1
    stored = json.loads((tmp_path / row["result"]).read_text())
    serial = json.loads(result_json(explain(still)))
    assert stored["explanations"] and _no_timings(stored) == _no_timings(serial)
    csv_rows = _read_index(tmp_path / row["result"].replace(".json", ".csv"))
    assert len(csv_rows) == 1 and csv_rows[0]["face_id"] == "1"
    # Perception-only results of the same file are a different setting, not a skip.
    assert batch.Settings(explain=True).key() != batch.Settings().key()


def test_explain_on_a_server_sends_each_workers_requests_there(cluster, dataset, tmp_path):
    still = dataset[0] / "single_face.jpg"
    with OpenAITestServer(["The face smiles."] * 8) as srv:
        settings = batch.Settings(explain=True, backend="openai", base_url=srv.base_url,
                                  model="served-name")
        summary = batch.run_batch([still], tmp_path, settings, workers=1, progress=False)
        assert srv.requests and all(r["model"] == "served-name" for r in srv.requests)
    [row] = summary.rows
    stored = json.loads((tmp_path / row["result"]).read_text())
    assert (stored["backend"], stored["model"]) == ("openai", "served-name")
    # Prose is no record: the engine stood in, and the result says so.
    assert stored["explanations"][0]["fallback_used"] is True


def test_the_command_line_runs_a_folder_and_leaves_nothing_behind(dataset, tmp_path, media):
    data, _ = dataset
    small = tmp_path / "in"
    small.mkdir()
    shutil.copy(media("single_face.jpg"), small / "face.jpg")
    shutil.copy(data / "sub" / "x.mp4", small / "x.mp4")
    out = tmp_path / "out"
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    temp = Path(tempfile.mkdtemp(prefix="frt-", dir="/tmp"))  # short: Ray's socket paths
    env.update(HOME=str(home), TMPDIR=str(temp), FACEREASON_HOME=str(assets.home()))
    try:
        r = subprocess.run([sys.executable, "-m", "agent.cli", "batch", str(small), "--out",
                            str(out), "--workers", "2"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr
        assert "2 inputs: 2 done, 0 skipped, 1 errors" in r.stdout
        rows = _by_name(_read_index(out / "index.csv"))
        assert sorted(rows) == ["face.jpg", "x.mp4"]
        assert rows["face.jpg"]["status"] == "ok" and rows["face.jpg"]["faces"] == "1"
        assert rows["x.mp4"]["code"] == "unreadable_media"
        # Ray's session files went to a temp dir that is gone, and no token was left in ~/.ray
        # (matplotlib, which MediaPipe imports, keeps its font cache in ~/.cache as it always does).
        assert list(temp.iterdir()) == [] and not (home / ".ray").exists()
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def test_fec_videos_are_captioned_through_batch(cluster, media, tmp_path):
    # `facereason eval fec --videos`: each referenced video explained on the cluster, a bad
    # or absent video a problem row scored as missing, and a rerun explains nothing again.
    from agent import explain
    from evals.fec import generate_predictions, run_fec
    from evals.judges import make_judge

    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(media("single_face.mp4"), videos / "single_face.mp4")
    (videos / "x.mp4").write_text("not a video\n")
    refs = [{"id": "a", "video": "single_face.mp4", "caption": "A man smiles broadly."},
            {"id": "b", "video": "x.mp4", "caption": "Someone frowns."},
            {"id": "c", "video": "gone.mp4", "caption": "Someone laughs."}]
    out = tmp_path / "report"
    out.mkdir()
    preds, problems = generate_predictions(refs, videos, None, out / "predictions.jsonl", progress=False)
    serial = explain(media("single_face.mp4"))
    assert preds == {"a": serial.explanations[0].caption} and preds["a"]
    by_id = {p["id"]: p for p in problems}
    assert sorted(by_id) == ["b", "c"] and by_id["c"]["code"] == "not_found"
    with pytest.raises(MediaError) as bad:
        analyze(videos / "x.mp4")
    assert by_id["b"]["code"] == bad.value.code
    assert [json.loads(x)["id"] for x in (out / "predictions.jsonl").read_text().splitlines()] == ["a"]
    stored = sorted((out / "captions").glob("*.json"))
    stamps = [p.stat().st_mtime_ns for p in stored]
    again, _ = generate_predictions(refs, videos, None, out / "predictions.jsonl", progress=False)
    assert again == preds and [p.stat().st_mtime_ns for p in stored] == stamps
    result = run_fec(preds, refs, make_judge("offline"), out_dir=out, workers=1, progress=False)
    assert result["missing"] == ["b", "c"] and result["summary"]["missing"] == 2
    assert (out / "report.md").is_file()
