"""What the server's work does, shared by the API and the page: check a request's
options, open its media, explain it, answer a follow-up, and say whether the
models are ready. Each job runs in a worker thread of the pool (server/runtime.py)
and calls `work.check()` at every frame and token, so a cancelled request stops.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from server.runtime import ServerState, Session, Work
from tools.errors import FaceReasonError

log = logging.getLogger("facereason.app")

LABEL_SET_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def safe_name(filename: str | None) -> str:
    """The upload's base name with anything that could act as a path removed."""
    base = re.split(r"[\\/]", filename or "")[-1]
    base = re.sub(r"[^A-Za-z0-9._ -]", "_", base).strip(" .")[:100]
    return base or "upload"


def label_sets() -> list[str]:
    from tools.labelsets import label_set_names  # the one list of what load_label_set accepts

    return label_set_names()


def check_label_set(name: str | None) -> str | None:
    if name in (None, "", "emotions", "default"):
        return None
    if not LABEL_SET_RE.match(name) or name not in label_sets():
        raise FaceReasonError(f"Unknown label set '{name[:64]}'; known: {', '.join(label_sets())}.",
                              code="unknown_label_set", http_status=422)
    return name


def probe(path: Path, limits) -> None:
    """Open the media once to raise size/type/duration problems before any work starts."""
    from tools.video import Media

    with Media(path, limits):
        pass


def explain_job(state: ServerState, path: Path, opts: dict, work: Work,
                emit: Callable[[str, Any], None]):
    """Runs in a worker thread: perception (under the server's limits, cancellable at
    every frame, with progress events), then the agent's explanation."""
    from agent import explain

    s = state.settings

    def on_progress(stage: str, fraction: float | None = None) -> None:
        work.check()
        emit("progress", {"stage": stage, "fraction": fraction})

    def on_token(text: str) -> None:
        work.check()
        emit("token", {"text": text})

    return explain(path, question=opts.get("question"), model=s.model, adapter=s.adapter,
                   backend=s.backend, base_url=s.base_url, api_key=s.backend_key,
                   label_set=opts.get("label_set"), fps=opts.get("fps"),
                   max_faces=opts.get("max_faces", 4), limits=s.limits(), on_token=on_token,
                   on_progress=on_progress, seed=0)


def chat_job(state: ServerState, sess: Session, question: str, work: Work):
    from agent import ChatSession, chat

    s = state.settings
    with sess.lock:  # one question at a time per conversation
        work.check()
        if sess.chat is None:
            sess.chat = ChatSession.start(sess.result, model=s.model, adapter=s.adapter,
                                          backend=s.backend, base_url=s.base_url,
                                          api_key=s.backend_key)
        return chat(sess.chat, question)


def warm_up(state: ServerState) -> None:
    """Load perception and the reasoner once, so the first request is not the slow one."""
    try:
        from agent import explain
        from tools.assets import media
        from tools.pipeline import analyze

        analyze(media("single_face.jpg"), max_faces=1, include_landmarks=False)
        state.ready["perception"] = True
        s = state.settings
        explain(media("single_face.jpg"), model=s.model, adapter=s.adapter, backend=s.backend,
                base_url=s.base_url, api_key=s.backend_key, max_faces=1)
        state.ready["reasoner"] = True
    except Exception as exc:  # readyz reports it; the server still answers what it can
        state.ready_error = f"{type(exc).__name__}: {exc}"
        log.warning("warm-up failed: %s", state.ready_error)


def readiness(state: ServerState) -> dict:
    """What /readyz reports: each part, whether it can answer now, and why not."""
    from tools import assets

    s = state.settings
    checks: dict[str, Any] = {}
    try:
        assets.path("face-landmarker")
        assets.path("emotion-cnn")
        checks["perception"] = True
    except Exception as exc:
        checks["perception"] = False
        checks["perception_error"] = str(exc)
    if s.backend == "openai":
        import httpx

        try:
            r = httpx.get(f"{s.base_url.rstrip('/')}/models", timeout=2.0,
                          headers={"Authorization": f"Bearer {s.backend_key}"} if s.backend_key else {})
            checks["reasoner"] = r.status_code == 200
        except httpx.HTTPError as exc:
            checks["reasoner"], checks["reasoner_error"] = False, f"{s.base_url}: {exc}"
    elif s.backend == "engine":
        checks["reasoner"] = True  # rules only: nothing to load
    else:
        checks["reasoner"] = s.model is not None and Path(s.model).exists() or bool(
            (assets.home() / "models" / assets.SMOLLM2 / "model.safetensors").exists())
    if s.preload:
        checks["warm"] = all(state.ready.values())
        if state.ready_error:
            checks["warm_error"] = state.ready_error
    return checks
