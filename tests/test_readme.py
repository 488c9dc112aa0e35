"""The README's Python examples run as written (with a real clip for clip.mp4)."""

import re
import shutil
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def _block(marker: str) -> str:
    found = [b for b in BLOCKS if marker in b]
    assert found, f"no README python block contains {marker!r}"
    return found[0]


def test_readme_perception_example_runs(media, tmp_path, monkeypatch, capsys):
    shutil.copy(media("single_face.mp4"), tmp_path / "clip.mp4")
    monkeypatch.chdir(tmp_path)
    exec(compile(_block("from tools import analyze"), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("1 ") and "happiness" in out  # the man smiles in single_face.mp4
    assert (tmp_path / "clip.csv").stat().st_size > 10_000


@pytest.mark.slow
def test_readme_chat_example_answers_with_the_moment(media, tmp_path, monkeypatch, capsys):
    shutil.copy(media("WolfgangLanger_Pexels.mp4"), tmp_path / "clip.mp4")
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(_block("ChatSession.start"), "README.md", "exec"), ns)
    answer = ns["answer"]
    assert not answer.fallback_used and not ns["result"].fallback_used  # the default reasoner answered
    assert answer.frame_time is not None and abs(answer.frame_time - 7.0) <= 0.5
    assert "7.0 s" in answer.text and answer.text in capsys.readouterr().out
