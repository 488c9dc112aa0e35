"""The explain-expression API under /v1, and /healthz and /readyz.

Every route that does real work is admitted through the worker pool
(server.runtime.admit) and runs a job of server/jobs.py; uploads are copied into
the request's own temp dir under a sanitised name, so a request never names a
server path, a model or a URL (those are fixed when the server starts).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from server.jobs import (
    chat_job,
    check_label_set,
    explain_job,
    label_sets,
    probe,
    readiness,
    safe_name,
)
from server.runtime import ApiError, Cancelled, ServerState, Work, admit, error_body
from tools.analysis import Analysis
from tools.errors import FaceReasonError, MediaError

log = logging.getLogger("facereason.app")


# ---------------------------------------------------------------- response models
class Flags(BaseModel):
    no_face: bool
    fallback_used: bool
    unfaithful_claims: int = 0
    warnings: list[str] = Field(default_factory=list)


class ExplainResponse(BaseModel):
    session_id: str
    model: str
    backend: str
    explanations: list[Any] = Field(description="one Explanation per face (agent.schema.Explanation)")
    text: str = Field(description="the explanation(s) as ExpLLM-layout text")
    message: str = ""
    timings: dict[str, float] = Field(default_factory=dict)
    flags: Flags
    analysis: dict = Field(description="the Analysis (tools.analysis.Analysis), landmarks omitted")


class ChatRequest(BaseModel):
    session_id: str = Field(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")
    question: str = Field(min_length=1, max_length=2000)


class ChatResponse(BaseModel):
    text: str = Field(description="the answer, naming the time and what the face does there")
    cited_times: list[float] = Field(default_factory=list)
    tool_calls: list[Any] = Field(default_factory=list)
    frame_time: float | None = Field(None, description="the moment the answer is about, in seconds")
    track_id: int | None = None
    record: dict[str, Any] | None = Field(None, description="what the model decided: evidence ids, "
                                                            "label and its sentence")
    fallback_used: bool = False


def set_schema_refs() -> None:
    """Point the loose fields at the real types so /docs shows Explanation and Analysis."""
    from agent.schema import Explanation
    from tools.analysis import Analysis

    ExplainResponse.model_fields["explanations"].annotation = list[Explanation]
    ExplainResponse.model_fields["analysis"].annotation = Analysis
    ExplainResponse.model_rebuild(force=True)


# ---------------------------------------------------------------- helpers for routes
async def save_upload(upload: UploadFile, work: Work, max_bytes: int) -> Path:
    """Copy the multipart file into the request's temp dir (no server path is ever taken)."""
    if upload is None or not getattr(upload, "filename", None) and not getattr(upload, "size", 0):
        raise MediaError("No file was uploaded: send it in the multipart field 'file'.",
                         code="missing_file", http_status=422)
    dest = work.dir / safe_name(upload.filename)

    def copy() -> int:
        n = 0
        with open(dest, "wb") as out:
            while chunk := upload.file.read(1 << 20):
                n += len(chunk)
                if n > max_bytes:
                    raise MediaError(f"The upload is over the limit of {max_bytes / 2**20:.0f} MiB.",
                                     code="file_too_large", http_status=413)
                out.write(chunk)
        return n

    await asyncio.to_thread(copy)
    return dest


async def wait_for(request: Request, work: Work, timeout_s: float) -> Any:
    """Await the work's future; stop it on timeout or when the client disconnects."""
    fut = asyncio.wrap_future(work.future)
    # If we stop waiting (timeout, disconnect), the worker's own error is expected: consume it.
    fut.add_done_callback(lambda f: f.cancelled() or f.exception())
    deadline = time.monotonic() + timeout_s
    while True:
        done, _ = await asyncio.wait({fut}, timeout=0.25)
        if done:
            return fut.result()
        if await request.is_disconnected():
            work.cancel.set()
            raise Cancelled("The client disconnected.")
        if time.monotonic() > deadline:
            work.cancel.set()
            raise ApiError(f"The request took longer than {timeout_s:.0f} s and was stopped.",
                           code="timeout", http_status=504)


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def explain_payload(sid: str, r: Any) -> dict:
    a = r.analysis
    return {
        "session_id": sid, "model": r.model or "", "backend": r.backend or "",
        "explanations": [e.model_dump(mode="json") for e in r.explanations],
        "text": r.text, "message": r.message, "timings": dict(r.timings),
        "flags": {"no_face": a.no_face, "fallback_used": bool(r.fallback_used),
                  "unfaithful_claims": int(r.unfaithful_count), "warnings": list(a.warnings)},
        "analysis": json.loads(a.to_json(include_landmarks=False)),
    }



# ---------------------------------------------------------------- routes
UploadField = Annotated[
    UploadFile, File(description="a video (mp4, mov, webm, mkv, avi) or image (jpg, png, ...)")]


def install_routes(app: FastAPI, state: ServerState, auth) -> None:
    s = state.settings

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "not ready"}})
    async def readyz() -> JSONResponse:
        """Models and assets are in place (and loaded, with --preload)."""
        checks = await asyncio.to_thread(readiness, state)
        ok = all(v for k, v in checks.items() if isinstance(v, bool))
        return JSONResponse({"status": "ready" if ok else "not_ready", "checks": checks},
                            status_code=200 if ok else 503)

    @app.get("/v1/models", tags=["api"], dependencies=[auth])
    async def models() -> dict:
        """The model this server answers with (fixed at start-up) and the label sets."""
        name = s.model or ("exp-cot-engine (rules, no model)" if s.backend == "engine"
                           else "SmolLM2-135M-Instruct (FaceReason default)")
        return {"object": "list", "backend": s.backend, "label_sets": label_sets(),
                "data": [{"id": name, "object": "model", "backend": s.backend,
                          "adapter": Path(s.adapter).name if s.adapter else None}]}

    async def _start(file: UploadFile) -> tuple[Work, Path]:
        work = admit(state)
        try:
            path = await save_upload(file, work, s.max_upload_bytes)
            await asyncio.to_thread(probe, path, s.limits())
        except BaseException:
            work.finish()
            raise
        return work, path

    @app.post("/v1/analyze", tags=["api"], dependencies=[auth],
              response_model=Analysis,
              responses={200: {"content": {"text/csv": {}}}, 413: {}, 415: {}, 422: {}, 503: {}})
    async def analyze_route(
        request: Request,
        file: UploadField,
        fps: Annotated[float | None, Form(gt=0, le=60)] = None,
        max_faces: Annotated[int, Form(ge=1, le=16)] = 4,
        landmarks: Annotated[bool, Form()] = False,
        label_set: Annotated[str | None, Form(max_length=64)] = None,
    ) -> Response:
        """Perception only: the Analysis as JSON, or CSV with `Accept: text/csv`."""
        extra = {"label_set": name} if (name := check_label_set(label_set)) else {}
        work, path = await _start(file)

        def job():
            from tools.pipeline import analyze

            return analyze(path, fps=fps or s.default_fps, max_faces=max_faces, limits=s.limits(),
                           include_landmarks=landmarks, progress=lambda *_: work.check(),
                           **extra)

        work.start(job)
        a = await wait_for(request, work, s.request_timeout_s)
        sid = state.add_session(a)
        headers = {"X-Session-Id": sid}
        if "text/csv" in request.headers.get("accept", ""):
            return PlainTextResponse(a.to_csv(include_landmarks=landmarks), media_type="text/csv",
                                     headers=headers)
        return Response(a.to_json(include_landmarks=landmarks), media_type="application/json",
                        headers=headers)

    @app.post("/v1/explain-expression", tags=["api"], dependencies=[auth],
              response_model=ExplainResponse,
              responses={200: {"content": {"text/event-stream": {}}}, 413: {}, 415: {}, 422: {},
                         503: {}, 504: {}})
    async def explain_route(
        request: Request,
        file: UploadField,
        question: Annotated[str | None, Form(max_length=2000)] = None,
        fps: Annotated[float | None, Form(gt=0, le=60)] = None,
        max_faces: Annotated[int, Form(ge=1, le=16)] = 4,
        label_set: Annotated[str | None, Form(max_length=64)] = None,
        stream: Annotated[bool, Form()] = False,
    ) -> Response:
        """Explain every face: key observations, interpretation, conclusion, caption.

        With `stream=true` the answer is server-sent events: `progress` (perception),
        `token` (the model's text as it is written), then `result` (the same JSON as
        without streaming) or `error` (`{error: {code, message}}`).
        """
        opts = {"question": question, "fps": fps or s.default_fps, "max_faces": max_faces,
                "label_set": check_label_set(label_set)}
        work, path = await _start(file)
        loop = asyncio.get_running_loop()
        if not stream:
            work.start(explain_job, state, path, opts, work, lambda *_: None)
            r = await wait_for(request, work, s.request_timeout_s)
            return JSONResponse(explain_payload(state.add_session(r), r))

        events: asyncio.Queue = asyncio.Queue()

        def emit(kind: str, data: Any) -> None:
            loop.call_soon_threadsafe(events.put_nowait, (kind, data))

        def job():
            try:
                r = explain_job(state, path, opts, work, emit)
                emit("result", explain_payload(state.add_session(r), r))
            except Cancelled:
                emit("end", None)
            except FaceReasonError as exc:
                emit("error", error_body(exc.code, str(exc)))
            except Exception:
                log.exception("explain failed")
                emit("error", error_body("internal_error", "Internal error; see the server log."))

        work.start(job)
        timer = loop.call_later(s.request_timeout_s, work.cancel.set)

        async def body() -> AsyncIterator[str]:
            try:
                while True:
                    kind, data = await events.get()
                    if kind == "end":
                        yield sse("error", error_body("timeout", "The request took too long."))
                        return
                    yield sse(kind, data)
                    if kind in ("result", "error"):
                        return
            finally:  # also on client disconnect: the worker stops at its next step
                timer.cancel()
                work.cancel.set()

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    @app.post("/v1/chat", tags=["api"], dependencies=[auth], response_model=ChatResponse,
              responses={404: {}, 422: {}, 503: {}, 504: {}})
    async def chat_route(request: Request, body: ChatRequest) -> JSONResponse:
        """A follow-up question about an earlier explanation or analysis (its session_id)."""
        sess = state.get_session(body.session_id)
        work = admit(state)
        work.start(chat_job, state, sess, body.question, work)
        ans = await wait_for(request, work, s.request_timeout_s)
        return JSONResponse(ChatResponse(
            text=ans.text, cited_times=ans.cited_times, tool_calls=[_jsonable(c) for c in ans.tool_calls],
            frame_time=ans.frame_time, track_id=ans.track_id, record=ans.record,
            fallback_used=ans.fallback_used).model_dump(mode="json"))


def _jsonable(x: Any) -> Any:
    if isinstance(x, BaseModel):
        return x.model_dump(mode="json")
    if hasattr(x, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(x)
    return x
