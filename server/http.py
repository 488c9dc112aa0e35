"""HTTP plumbing of the API: the JSON error shape on every 4xx/5xx, the upload-size
guard that runs before a body is parsed, and the bearer-token check.
"""

from __future__ import annotations

import logging
import secrets

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.runtime import ApiError, Settings, error_body
from tools.errors import FaceReasonError

log = logging.getLogger("facereason.app")


def error_response(code: str, message: str, status: int,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def _status_code_name(status: int) -> str:
    return {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
            406: "not_acceptable", 413: "too_large", 415: "unsupported_media",
            422: "validation_error"}.get(status, f"http_{status}")


def install_error_handlers(app: FastAPI) -> None:
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


def auth_dependency(settings: Settings):
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
