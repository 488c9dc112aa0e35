"""A small OpenAI-schema chat server on 127.0.0.1 for testing the `openai` backend.

It speaks the parts of the API the backend uses (`GET /v1/models`, `POST
/v1/chat/completions` with and without SSE streaming, structured tool calls)
and replays the replies it is given, one per request, as a model would. Modes
simulate failures: "slow" answers after `delay` seconds (a timeout), "garbage"
sends bytes that are not an OpenAI response, "fail_then_ok" answers HTTP 503
`failures` times before behaving, "nostream" ignores stream=true, "no_structured"
rejects a `response_format` with HTTP 400 as servers without structured output do.
Every request body is kept in `requests` so tests can check what was sent.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class OpenAITestServer:
    def __init__(self, replies: list[str | dict] | None = None, mode: str = "ok",
                 model: str = "test-model", delay: float = 3.0, failures: int = 1,
                 chunk_chars: int = 7):
        self.replies = list(replies or [])
        self.mode, self.model, self.delay = mode, model, delay
        self.failures, self.chunk_chars = failures, chunk_chars
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> OpenAITestServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _next_reply(self) -> str | dict:
        with self._lock:
            return self.replies.pop(0) if self.replies else "I have nothing more to say."

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    body = {"object": "list", "data": [{"id": server.model, "object": "model"}]}
                    self._send(200, json.dumps(body).encode())
                else:
                    self._send(404, b'{"error": "not found"}')

            def do_POST(self) -> None:
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, b'{"error": "not found"}')
                    return
                n = int(self.headers.get("Content-Length", 0))
                req = json.loads(self.rfile.read(n))
                with server._lock:
                    server.requests.append(req)
                mode = server.mode
                if mode == "no_structured" and "response_format" in req:
                    self._send(400, b'{"error": {"message": "Unsupported parameter: response_format"}}')
                    return
                if mode == "slow":
                    time.sleep(server.delay)
                if mode == "garbage":
                    self._send(200, b"<html>502 Bad Gateway</html>\n", "text/html")
                    return
                if mode == "garbage_stream":
                    self._send(200, b"data: {not json at all\n\n", "text/event-stream")
                    return
                if mode == "fail_then_ok":
                    with server._lock:
                        server.failures -= 1
                        failing = server.failures >= 0
                    if failing:
                        self._send(503, b'{"error": "overloaded"}')
                        return
                reply = server._next_reply()
                if req.get("stream") and mode != "nostream":
                    self._stream(reply)
                else:
                    self._send(200, json.dumps(self._completion(reply)).encode())

            def _message(self, reply: str | dict) -> dict:
                if isinstance(reply, dict):  # {"tool_calls": [...]} or {"content": ...}
                    return {"role": "assistant", "content": reply.get("content"),
                            "tool_calls": reply.get("tool_calls")}
                return {"role": "assistant", "content": reply}

            def _completion(self, reply: str | dict) -> dict:
                msg = self._message(reply)
                text = msg.get("content") or ""
                return {"id": "cmpl-test", "object": "chat.completion", "model": server.model,
                        "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": max(1, len(text) // 4)}}

            def _stream(self, reply: str | dict) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                msg = self._message(reply)
                text = msg.get("content") or ""

                def emit(delta: dict | None, usage: dict | None = None) -> None:
                    chunk: dict[str, Any] = {"id": "cmpl-test", "object": "chat.completion.chunk",
                                             "model": server.model,
                                             "choices": [] if delta is None else
                                             [{"index": 0, "delta": delta, "finish_reason": None}]}
                    if usage:
                        chunk["usage"] = usage
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()

                try:
                    emit({"role": "assistant"})
                    step = server.chunk_chars
                    for i in range(0, len(text), step):
                        emit({"content": text[i:i + step]})
                    for i, tc in enumerate(msg.get("tool_calls") or []):
                        args = tc["function"]["arguments"]
                        half = len(args) // 2  # arguments arrive in fragments, as from vLLM
                        emit({"tool_calls": [{"index": i, "id": tc.get("id", f"call_{i}"), "type": "function",
                                              "function": {"name": tc["function"]["name"],
                                                           "arguments": args[:half]}}]})
                        emit({"tool_calls": [{"index": i, "function": {"arguments": args[half:]}}]})
                    emit(None, {"prompt_tokens": 10, "completion_tokens": max(1, len(text) // 4)})
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading early, as the format gate does

        return Handler
