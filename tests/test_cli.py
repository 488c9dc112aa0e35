"""The `facereason` command as a user runs it: a real subprocess."""

import csv
import json
import subprocess
import sys


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True,
                          text=True, timeout=300, **kw)


def test_analyze_prints_a_summary_and_writes_json_and_csv(media, tmp_path):
    j, c = tmp_path / "a.json", tmp_path / "a.csv"
    r = run("analyze", str(media("single_face.mp4")), "--json", str(j), "--csv", str(c))
    assert r.returncode == 0, r.stderr
    assert "faces found: 1" in r.stdout and "frames analysed: 72" in r.stdout
    assert "Traceback" not in r.stderr and "W0000" not in r.stderr
    data = json.loads(j.read_text())
    with open(c) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == sum(len(t["timestamps"]) for t in data["tracks"]) == 72


def test_bad_input_is_one_sentence_not_a_traceback(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("hello")
    for target in [bad, tmp_path / "missing.mov", tmp_path]:
        r = run("analyze", str(target))
        assert r.returncode == 2
        assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_no_face_video_reports_none(media):
    r = run("analyze", str(media("no_face.mp4")))
    assert r.returncode == 0 and "no face found" in r.stdout


def test_assets_list_shows_every_asset():
    r = run("assets", "list")
    assert r.returncode == 0
    for name in ["face-landmarker", "emotion-cnn", "test-media", "minilm"]:
        assert name in r.stdout


HEAVY = ("torch", "transformers", "peft", "trl", "fastapi", "gradio", "langgraph", "uvicorn", "ray",
         "scipy")
WEB_AND_LM = ("transformers", "peft", "trl", "fastapi", "gradio", "langgraph", "uvicorn")


def _loaded_after(code: str) -> list[str]:
    probe = (f"import sys, contextlib, io\n{code}\n"
             f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_help_loads_no_model_or_web_stack():
    # Every sub-command's parser is built, as `facereason --help` does.
    assert _loaded_after("from agent import cli\ncli.build_parser().format_help()") == []


def test_analyze_loads_no_web_or_language_model_stack(media):
    still = media("single_face.jpg")
    loaded = _loaded_after("from agent import cli\nwith contextlib.redirect_stdout(io.StringIO()):\n"
                           f"    assert cli.main(['analyze', {str(still)!r}]) == 0")
    assert not set(loaded) & set(WEB_AND_LM), loaded


def test_analyze_runs_without_torch(media):
    """Perception runs the emotion CNN's ONNX export with cv2.dnn: torch is needed only
    for the one-time export, done here first (it is cached per machine)."""
    from tools.emotion_cnn import onnx_file

    onnx_file()
    loaded = _loaded_after("from agent import cli\nwith contextlib.redirect_stdout(io.StringIO()):\n"
                           f"    assert cli.main(['analyze', {str(media('single_face.mp4'))!r}]) == 0")
    assert "torch" not in loaded, loaded
