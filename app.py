"""FaceReason server: the explain-expression API under /v1 and the Gradio page at /.

    python app.py                 # or: facereason serve [--host H] [--port P] [--backend B]

One FastAPI application, built by `create_app(Settings(...))`. Where things are:

    server/runtime.py   settings, the bounded worker pool, per-request work, sessions
    server/jobs.py      what the work does: open the media, explain, answer a follow-up
    server/api.py       the /v1 routes and their response models
    server/http.py      the JSON error shape, the upload-size guard, bearer auth
    server/page.py      the Gradio page

The API and the page both import the runtime and the jobs, never each other.
Errors a user can cause are `{"error": {"code", "message"}}` with a 4xx status;
nothing answers with a traceback. `import app` loads FastAPI but not torch,
MediaPipe or Gradio: those load when the app is built or the first job runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
from collections.abc import AsyncIterator

from fastapi import FastAPI

from server.api import install_routes, set_schema_refs
from server.http import BodyLimit, auth_dependency, install_error_handlers
from server.jobs import warm_up
from server.runtime import ServerState, Settings
from tools.errors import FaceReasonError

__all__ = ["create_app", "Settings", "ServerState", "run_serve"]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application (API + page). Tests call this with their own Settings."""
    from agent.backends import resolve_backend

    settings = settings or Settings.from_env()
    # "auto" is decided once, at start-up: the shipped fine-tuned model, else the engine.
    settings.backend = resolve_backend(settings.backend, settings.model, settings.adapter)
    state = ServerState(settings)
    set_schema_refs()

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
    install_error_handlers(app)
    install_routes(app, state, auth_dependency(settings))
    if settings.cors_origins.strip():
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware,
                           allow_origins=[o.strip() for o in settings.cors_origins.split(",")],
                           allow_methods=["GET", "POST"], allow_headers=["Authorization"])
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes + 64 * 1024)
    if settings.ui:
        import gradio as gr

        from server.page import build_ui

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
