"""FaceReason server: the explain-expression API under /v1 and the Gradio page at /.

    python app.py                 # or: facereason serve [--host H] [--port P] [--backend B]

One FastAPI application. Every request that does real work takes a slot in a
bounded worker pool (`Settings.workers` running + `Settings.queue` waiting);
when none is free the answer is 503 with Retry-After, so a burst degrades into
back-pressure instead of an ever-growing queue of half-served clients. Each
upload goes to its own temp dir, removed when the work on it ends (success,
error, timeout or client disconnect: the worker is told to stop at its next
frame or token, and the dir goes when it has). Errors a user can cause are
`{"error": {"code", "message"}}` with a 4xx status; nothing answers with a
traceback. Requests never name a server path, a model or a URL: the model and
backend are fixed when the server starts.

Heavy imports (mediapipe, torch, gradio) happen inside functions so that
`import app` (and `facereason --help`) stays cheap.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures as cf
import json
import logging
import math
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from tools.analysis import Analysis
from tools.errors import FaceReasonError, MediaError

log = logging.getLogger("facereason.app")

LABEL_SET_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


# ---------------------------------------------------------------- settings
@dataclass
class Settings:
    """Server configuration; every field can be set with FACEREASON_<NAME> in the environment."""

    host: str = "127.0.0.1"
    port: int = 7860
    backend: str = "auto"  # the shipped model (else the engine), "transformers", "openai" or "engine"
    model: str | None = None  # None: the agent's default (SmolLM2 + our adapter)
    adapter: str | None = None
    base_url: str | None = None  # for backend=openai
    backend_key: str | None = None  # sent to the OpenAI-compatible server, never to clients
    api_key: str | None = None  # FACEREASON_API_KEY: bearer token clients must send
    cors_origins: str = ""  # comma-separated; empty = no cross-origin access
    max_upload_mb: float = 100.0
    max_duration_s: float = 120.0
    max_pixels: int = 4096 * 4096
    default_fps: float | None = None  # None: every frame
    request_timeout_s: float = 300.0
    workers: int = 1  # 2 cores: one analysis at a time already uses both
    queue: int = 8
    sessions: int = 64  # chat sessions kept (least recently used dropped)
    session_ttl_s: float = 3600.0
    tmp_dir: str | None = None  # parent of the per-request temp dirs
    preload: bool = False  # load the models at startup (readyz turns ready after)
    ui: bool = True

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        s = cls()
        for f in fields(cls):
            raw = os.environ.get(f"FACEREASON_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            cur = getattr(s, f.name)
            kind = f.type if isinstance(f.type, str) else str(f.type)
            if "bool" in kind:
                val: Any = raw.strip().lower() in ("1", "true", "yes", "on")
            elif "int" in kind:
                val = int(raw)
            elif "float" in kind:
                val = float(raw)
            else:
                val = raw
            setattr(s, f.name, val if val is not None else cur)
        for k, v in overrides.items():
            if v is not None:
                setattr(s, k, v)
        return s

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def limits(self):
        from tools.video import Limits

        return Limits(max_file_bytes=self.max_upload_bytes, max_duration_s=self.max_duration_s,
                      max_pixels=self.max_pixels)


# ---------------------------------------------------------------- errors
class ApiError(FaceReasonError):
    """A request-level problem (busy, timeout, auth) with its own status and headers."""

    def __init__(self, message: str, code: str, http_status: int,
                 headers: dict[str, str] | None = None):
        super().__init__(message, code=code, http_status=http_status)
        self.headers = headers or {}


class Cancelled(FaceReasonError):
    """Raised inside a worker when its request timed out or its client went away."""

    code = "cancelled"
    http_status = 499


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def error_response(code: str, message: str, status: int,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def _status_code_name(status: int) -> str:
    return {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
            406: "not_acceptable", 413: "too_large", 415: "unsupported_media",
            422: "validation_error"}.get(status, f"http_{status}")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FaceReasonError)
    async def _known(request: Request, exc: FaceReasonError):
        return error_response(exc.code, str(exc), exc.http_status, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors()[:5]:
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query"))
            parts.append(f"{where or 'request'}: {e.get('msg', 'invalid')}")
        return error_response("validation_error", "; ".join(parts) or "invalid request", 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        msg = exc.detail if isinstance(exc.detail, str) else "request rejected"
        return error_response(_status_code_name(exc.status_code), msg, exc.status_code,
                              getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        from tools.errors import user_message

        msg = user_message(exc)
        if msg is not None:  # e.g. a missing asset: the server is not ready, not the client's fault
            return error_response("unavailable", msg, 503)
        log.exception("internal error on %s", request.url.path)
        return error_response("internal_error", "Internal error; the server log has details.", 500)


class BodyLimit:
    """Reject request bodies over the upload limit with a JSON 413, before they are parsed.

    Starlette's own body-limit middleware answers in plain text; clients of this API
    expect the JSON error shape on every 4xx.
    """

    class _TooLarge(Exception):
        pass

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def _reject(self, send) -> None:
        mb = self.max_bytes / 2**20
        resp = error_response("file_too_large", f"The upload is over the limit of {mb:.0f} MiB.", 413)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(k.encode(), v.encode()) for k, v in resp.headers.items()]})
        await send({"type": "http.response.body", "body": resp.body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit() and int(v) > self.max_bytes:
                return await self._reject(send)
        seen, started = 0, False

        async def counted():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyLimit._TooLarge
            return msg

        async def tracked(msg):
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, counted, tracked)
        except BodyLimit._TooLarge:
            if not started:
                await self._reject(send)


# ---------------------------------------------------------------- worker pool
class WorkerPool:
    """`workers` threads and at most `queue` jobs waiting; `try_acquire` says if one more fits."""

    def __init__(self, workers: int, queue: int):
        self.workers, self.capacity = max(1, workers), max(1, workers) + max(0, queue)
        self._exec = cf.ThreadPoolExecutor(self.workers, thread_name_prefix="facereason-worker")
        self._lock = threading.Lock()
        self.in_use = 0
        self._recent: list[float] = []  # durations of recent jobs, for Retry-After

    def try_acquire(self) -> bool:
        with self._lock:
            if self.in_use >= self.capacity:
                return False
            self.in_use += 1
            return True

    def release(self, seconds: float | None = None) -> None:
        with self._lock:
            self.in_use = max(0, self.in_use - 1)
            if seconds is not None:
                self._recent = (self._recent + [seconds])[-20:]

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue ahead times a typical job."""
        with self._lock:
            typical = sorted(self._recent)[len(self._recent) // 2] if self._recent else 5.0
            return max(1, math.ceil(typical * self.in_use / self.workers / max(1, self.capacity - 1)))

    def submit(self, fn: Callable, *args) -> cf.Future:
        return self._exec.submit(fn, *args)

    def shutdown(self) -> None:
        self._exec.shutdown(wait=False, cancel_futures=True)


class Work:
    """One request's slot and temp dir; both are given back when its job (if any) has ended."""

    def __init__(self, state: ServerState):
        self.state = state
        os.makedirs(state.tmp_root, exist_ok=True)  # an app restarted in-process removed it
        self.dir = Path(tempfile.mkdtemp(prefix="req-", dir=state.tmp_root))
        self.cancel = threading.Event()
        self.future: cf.Future | None = None
        self.t0 = time.perf_counter()
        self._done = False

    def start(self, fn: Callable, *args) -> cf.Future:
        self.future = self.state.pool.submit(fn, *args)
        self.future.add_done_callback(lambda _f: self.finish(ran=True))
        return self.future

    def finish(self, ran: bool = False) -> None:
        if self._done:
            return
        self._done = True
        shutil.rmtree(self.dir, ignore_errors=True)
        self.state.pool.release(time.perf_counter() - self.t0 if ran else None)

    def check(self) -> None:
        """Called from the worker at each frame/token: stop when the request is gone."""
        if self.cancel.is_set():
            raise Cancelled("The request was cancelled.")


# ---------------------------------------------------------------- state
@dataclass
class Session:
    result: Any  # ExplainResult or Analysis
    chat: Any = None  # agent.ChatSession, created on the first question
    used: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)


class ServerState:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.pool = WorkerPool(settings.workers, settings.queue)
        root = settings.tmp_dir or os.path.join(tempfile.gettempdir(), f"facereason-{os.getpid()}")
        os.makedirs(root, exist_ok=True)
        self.tmp_root = root
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self._slock = threading.Lock()
        self.ready: dict[str, bool] = {"perception": False, "reasoner": False}
        self.ready_error: str | None = None

    def add_session(self, result: Any) -> str:
        sid = uuid.uuid4().hex
        with self._slock:
            self.sessions[sid] = Session(result)
            while len(self.sessions) > self.settings.sessions:
                self.sessions.popitem(last=False)
        return sid

    def get_session(self, sid: str) -> Session:
        with self._slock:
            s = self.sessions.get(sid)
            if s is None or time.monotonic() - s.used > self.settings.session_ttl_s:
                self.sessions.pop(sid, None)
                raise ApiError(f"No session '{sid[:40]}': it expired or never existed; "
                               "send the media to /v1/explain-expression again.",
                               code="unknown_session", http_status=404)
            s.used = time.monotonic()
            self.sessions.move_to_end(sid)
            return s


# ---------------------------------------------------------------- models
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


def _set_schema_refs() -> None:
    """Point the loose fields at the real types so /docs shows Explanation and Analysis."""
    from agent.schema import Explanation
    from tools.analysis import Analysis

    ExplainResponse.model_fields["explanations"].annotation = list[Explanation]
    ExplainResponse.model_fields["analysis"].annotation = Analysis
    ExplainResponse.model_rebuild(force=True)


# ---------------------------------------------------------------- app factory
def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application (API + page). Tests call this with their own Settings."""
    from agent.backends import resolve_backend

    settings = settings or Settings.from_env()
    # "auto" is decided once, at start-up: the shipped fine-tuned model, else the engine.
    settings.backend = resolve_backend(settings.backend, settings.model, settings.adapter)
    state = ServerState(settings)
    _set_schema_refs()

    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.preload:
            asyncio.get_running_loop().run_in_executor(None, warm_up, state)
        yield
        state.pool.shutdown()
        shutil.rmtree(state.tmp_root, ignore_errors=True)

    app = FastAPI(title="FaceReason", version="0.1.0", lifespan=_as_cm(lifespan),
                  description="Explains facial expressions in a video or image: face tracking, "
                              "Action Units, emotion, and a grounded chain-of-thought.")
    app.state.fr = state
    _install_error_handlers(app)
    _install_routes(app, state, _auth_dependency(settings))
    if settings.cors_origins.strip():
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware,
                           allow_origins=[o.strip() for o in settings.cors_origins.split(",")],
                           allow_methods=["GET", "POST"], allow_headers=["Authorization"])
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes + 64 * 1024)
    if settings.ui:
        import gradio as gr

        from app_ui import build_ui

        auth = None
        if settings.api_key:
            key = settings.api_key
            auth = lambda _user, password: secrets.compare_digest(password, key)  # noqa: E731
        app = gr.mount_gradio_app(app, build_ui(state), path="/", auth=auth,
                                   max_file_size=settings.max_upload_bytes, footer_links=["api"])
    return app


def _as_cm(gen_fn):
    from contextlib import asynccontextmanager

    return asynccontextmanager(gen_fn)


def _auth_dependency(settings: Settings):
    async def check(request: Request) -> None:
        if not settings.api_key:
            return
        got = request.headers.get("authorization", "")
        scheme, _, token = got.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip(), settings.api_key):
            raise ApiError("Missing or wrong bearer token: send 'Authorization: Bearer <key>'.",
                           code="unauthorized", http_status=401,
                           headers={"WWW-Authenticate": "Bearer"})

    return Depends(check)


# ---------------------------------------------------------------- helpers for routes
def safe_name(filename: str | None) -> str:
    """The upload's base name with anything that could act as a path removed."""
    base = re.split(r"[\\/]", filename or "")[-1]
    base = re.sub(r"[^A-Za-z0-9._ -]", "_", base).strip(" .")[:100]
    return base or "upload"


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


# ---------------------------------------------------------------- agent glue
def label_sets() -> list[str]:
    import prompts

    names = sorted(p.stem for p in (Path(prompts.__file__).parent / "labelsets").glob("*.yaml"))
    return ["emotions", *names]


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


# ---------------------------------------------------------------- routes
UploadField = Annotated[
    UploadFile, File(description="a video (mp4, mov, webm, mkv, avi) or image (jpg, png, ...)")]


def _install_routes(app: FastAPI, state: ServerState, auth) -> None:
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
        if not state.pool.try_acquire():
            raise ApiError("The server is busy; try again shortly.", code="busy", http_status=503,
                           headers={"Retry-After": str(state.pool.retry_after())})
        work = Work(state)
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

        try:
            work.start(job)
        except BaseException:
            work.finish()
            raise
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
            try:
                work.start(explain_job, state, path, opts, work, lambda *_: None)
            except BaseException:
                work.finish()
                raise
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

        try:
            work.start(job)
        except BaseException:
            work.finish()
            raise
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
        if not state.pool.try_acquire():
            raise ApiError("The server is busy; try again shortly.", code="busy", http_status=503,
                           headers={"Retry-After": str(state.pool.retry_after())})
        work = Work(state)
        try:
            work.start(chat_job, state, sess, body.question, work)
        except BaseException:
            work.finish()
            raise
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


# ---------------------------------------------------------------- CLI
def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    settings = Settings.from_env(host=args.host, port=args.port, backend=args.backend,
                                 model=args.model, adapter=args.adapter, base_url=args.base_url,
                                 workers=args.workers, queue=args.queue)
    if args.no_ui:
        settings.ui = False
    if args.preload:
        settings.preload = True
    if settings.backend == "openai" and not settings.base_url:
        raise FaceReasonError("--backend openai needs --base-url (e.g. http://127.0.0.1:8000/v1).")
    print(f"FaceReason on http://{settings.host}:{settings.port}/  (API docs at /docs)")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    import sys

    from agent.commands import serve_args

    parser = argparse.ArgumentParser(prog="app.py", description="Serve FaceReason.")
    serve_args(parser)
    sys.exit(run_serve(parser.parse_args()))
