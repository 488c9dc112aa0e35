"""The server's runtime: settings, the bounded worker pool, per-request work, sessions.

The API (server/api.py) and the page (server/page.py) both admit work through
`admit`: a slot in the pool (`Settings.workers` running + `Settings.queue`
waiting) or `ApiError("busy")`, which the API answers with 503 and Retry-After
and the page shows as a sentence. Each admitted request gets its own temp dir,
removed when its job ends (success, error, timeout or client disconnect: the
worker is told to stop at its next frame or token, and the dir goes when it
has). Nothing here imports FastAPI, Gradio, torch or MediaPipe.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tools.errors import FaceReasonError


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


# ---------------------------------------------------------------- request-level errors
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
    """The JSON shape of every error the API and its event stream send."""
    return {"error": {"code": code, "message": message}}


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
        """Run fn(*args) in the pool; the slot and dir are given back when it ends (or at once,
        if it cannot be started)."""
        try:
            self.future = self.state.pool.submit(fn, *args)
        except BaseException:
            self.finish()
            raise
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


def admit(state: ServerState) -> Work:
    """A slot and a temp dir for one request, or ApiError("busy") when the pool is full."""
    if not state.pool.try_acquire():
        raise ApiError("The server is busy; try again shortly.", code="busy", http_status=503,
                       headers={"Retry-After": str(state.pool.retry_after())})
    return Work(state)


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
