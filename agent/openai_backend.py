"""An OpenAI-compatible chat server (vLLM, llama.cpp server, ...) as a backend, over HTTP
with SSE streaming, timeouts and retries. A schema goes out as a `json_schema`
response format (vLLM's structured outputs); a server that refuses it gets the
schema in the prompt instead, and the agent validates the reply.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agent.backends import (
    ENV_BASE_URL,
    ENV_KEY,
    ENV_MODEL,
    Backend,
    BackendError,
    Generation,
    Request,
    TokenFn,
    schema_prompt,
    text_messages,
)


class OpenAIBackend(Backend):
    """An OpenAI-compatible chat server (vLLM, llama.cpp server, ...) over HTTP.

    A request's schema is sent as `response_format: json_schema` (vLLM enforces it with
    its structured-output backends). A server that rejects that field is asked again
    with the schema written into the prompt, and from then on always so
    (`structured` becomes False); the agent validates and, once, repairs the reply.
    """

    name = "openai"

    def __init__(self, base_url: str | None = None, model: str | None = None,
                 api_key: str | None = None, timeout: float = 60.0, retries: int = 2,
                 structured: bool = True, max_parallel: int = 8):
        import httpx

        base_url = base_url or os.environ.get(ENV_BASE_URL) or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise BackendError(f"the openai backend needs a base URL (--base-url or ${ENV_BASE_URL})")
        base_url = base_url.rstrip("/")
        if not base_url.endswith("/v1"):
            base_url += "/v1"
        self.base_url = base_url
        key = api_key or os.environ.get(ENV_KEY) or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.timeout, self.retries, self.structured = timeout, retries, structured
        self.max_parallel = max_parallel
        self._http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"},
                                  timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))
        self._httpx = httpx
        self.model_id = model or os.environ.get(ENV_MODEL) or self._first_model()

    def close(self) -> None:
        self._http.close()

    def _request(self, fn: Callable[[], Any]) -> Any:
        """Run fn with retries on connection errors, timeouts, 429 and 5xx."""
        httpx = self._httpx
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except httpx.TimeoutException as exc:
                last = BackendError(f"the server at {self.base_url} timed out after {self.timeout:g} s")
                last.__cause__ = exc
            except httpx.TransportError as exc:
                last = BackendError(f"cannot reach the server at {self.base_url}: {exc}")
            except httpx.HTTPStatusError as exc:
                code = exc.response.status_code
                last = BackendError(f"the server at {self.base_url} answered HTTP {code}: "
                                    f"{exc.response.text[:200]}")
                last.status = code  # type: ignore[attr-defined]
                last.body = exc.response.text  # type: ignore[attr-defined]
                if code != 429 and code < 500:
                    break
            if attempt < self.retries:
                time.sleep(0.25 * 2 ** attempt)
        assert last is not None
        raise last

    def _first_model(self) -> str:
        def get() -> str:
            r = self._http.get("/models")
            r.raise_for_status()
            try:
                return r.json()["data"][0]["id"]
            except (ValueError, KeyError, IndexError, TypeError):
                raise BackendError(f"{self.base_url}/models did not list a model; pass --model") from None
        return self._request(get)

    def generate_batch(self, requests: list[Request], *, temperature: float = 0.0,
                       seed: int = 0) -> list[Generation]:
        if len(requests) == 1:
            return [self._one(requests[0], temperature, seed)]
        # The server batches concurrent requests itself (vLLM's continuous batching).
        with ThreadPoolExecutor(min(self.max_parallel, len(requests))) as pool:
            return list(pool.map(lambda r: self._one(r, temperature, seed), requests))

    def _body(self, req: Request, temperature: float, seed: int, structured: bool) -> dict:
        msgs = text_messages(req.messages)
        body: dict[str, Any] = {"model": self.model_id, "messages": msgs, "stream": True,
                                "max_tokens": req.max_new_tokens, "temperature": temperature,
                                "seed": seed, "stream_options": {"include_usage": True}}
        if req.schema is not None:
            if structured:
                body["response_format"] = {"type": "json_schema", "json_schema": {
                    "name": "facereason_record", "schema": req.schema, "strict": True}}
            else:
                msgs[0] = {**msgs[0], "content": msgs[0]["content"] + "\n" + schema_prompt(req.schema)}
        return body

    def _one(self, req: Request, temperature: float, seed: int) -> Generation:
        structured = self.structured and req.schema is not None
        try:
            g = self._stream(self._body(req, temperature, seed, self.structured), req.on_token)
        except BackendError as exc:
            refused = getattr(exc, "status", 0) in (400, 422) and "response_format" in \
                getattr(exc, "body", "") + str(exc)
            if not (structured and refused):
                raise
            self.structured = False  # this server has no structured output: say it in the prompt
            structured = False
            g = self._stream(self._body(req, temperature, seed, False), req.on_token)
        g.constrained = structured
        return g

    def _stream(self, body: dict, on_token: TokenFn | None) -> Generation:
        t0 = time.perf_counter()
        state: dict[str, Any] = {}

        def call() -> Generation:
            text, ttft, usage = "", None, {}
            with self._http.stream("POST", "/chat/completions", json=body) as r:
                if r.status_code >= 400:
                    r.read()
                    r.raise_for_status()
                ctype = r.headers.get("content-type", "")
                if "text/event-stream" not in ctype:
                    # A server that ignores stream=true: read one JSON completion.
                    return self._from_json(r.read(), t0, on_token)
                for line in r.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = self._json(data)
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content") or ""
                        if piece:
                            if ttft is None:
                                ttft = time.perf_counter() - t0
                            state["started"] = True
                            text += piece
                            if on_token is not None:
                                on_token(piece)
                if not text and not usage:
                    raise BackendError(f"the server at {self.base_url} sent an empty stream")
            return Generation(text=text,
                              n_tokens=int(usage.get("completion_tokens", 0)) or _approx_tokens(text),
                              prompt_tokens=int(usage.get("prompt_tokens", 0)), ttft=ttft,
                              seconds=time.perf_counter() - t0)

        def guarded() -> Generation:
            # Never retry once tokens have reached the caller: they would be streamed twice.
            if state.get("started"):
                raise BackendError(f"the stream from {self.base_url} broke off")
            return call()

        return self._request(guarded)

    def _json(self, data: str | bytes) -> dict:
        try:
            obj = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BackendError(f"the server at {self.base_url} returned something that is not "
                               f"JSON: {str(data)[:80]!r}") from None
        if not isinstance(obj, dict) or ("choices" not in obj and "usage" not in obj):
            raise BackendError(f"the server at {self.base_url} returned JSON that is not an OpenAI "
                               f"chat completion: {str(data)[:80]!r}")
        return obj

    def _from_json(self, raw: bytes, t0: float, on_token: TokenFn | None) -> Generation:
        obj = self._json(raw)
        try:
            msg = obj["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise BackendError(f"the server at {self.base_url} returned a completion without a "
                               "message") from None
        text = msg.get("content") or ""
        if text and on_token is not None:
            on_token(text)
        usage = obj.get("usage") or {}
        return Generation(text=text, n_tokens=int(usage.get("completion_tokens", 0)) or _approx_tokens(text),
                          prompt_tokens=int(usage.get("prompt_tokens", 0)),
                          ttft=time.perf_counter() - t0, seconds=time.perf_counter() - t0)


def _approx_tokens(text: str) -> int:
    # Only when a server reports no usage: about four characters a token for English.
    return max(1, len(text) // 4) if text else 0
