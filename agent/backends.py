"""Model backends behind one interface: `backend.generate_batch(requests) -> [Generation]`.

- `transformers`: a local causal LM or image-text-to-text model (default: the
  SmolLM2-135M-Instruct asset with the shipped LoRA merged in), CPU by default
  and the GPU when there is one. A request's JSON schema is enforced while
  decoding with llguidance (a token mask per step; grammars compile in about a
  millisecond, so a schema built per face costs nothing). Requests are decoded
  together in one batch; a single request streams its tokens and reuses the
  KV cache of the longest prompt prefix it shares with an earlier one (the
  system prompt, or a whole chat history).
- `openai`: any OpenAI-compatible chat server (vLLM first) over HTTP, with SSE
  streaming, timeouts and retries. A schema goes out as a `json_schema`
  response format (vLLM's structured outputs); a server that refuses it gets
  the schema in the prompt instead, and the agent validates the reply.

Messages use the OpenAI shape. A tool result is a user turn wrapped in
<tool_response> (what Qwen2.5's template renders for a tool turn), so one
conversation format serves fine-tuning and inference alike.
"""

from __future__ import annotations

import abc
import copy
import functools
import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import prompts
from agent import models
from agent.models import ModelError

TokenFn = Callable[[str], None]

ENV_BASE_URL = "FACEREASON_OPENAI_BASE_URL"
ENV_MODEL = "FACEREASON_OPENAI_MODEL"
ENV_KEY = "FACEREASON_OPENAI_API_KEY"
ENV_THREADS = "FACEREASON_TORCH_THREADS"
PREFIX_CACHE = 4  # prompt prefixes whose KV cache a backend keeps


def generation_threads() -> int | None:
    """Intra-op threads for local generation, or None for torch's default.

    OpenMP workers spin while they wait for each other; on a CPU already busier
    than its core count (a shared machine, a server doing perception at the same
    time) two threads decoded SmolLM2 ~10x slower than one here (1.8 s vs 0.15 s a
    token). So: $FACEREASON_TORCH_THREADS if set, else 1 when the load average
    exceeds the core count, else torch's default.
    """
    if os.environ.get(ENV_THREADS):
        return max(1, int(os.environ[ENV_THREADS]))
    try:
        busy = os.getloadavg()[0] > (os.cpu_count() or 1)
    except OSError:
        busy = False
    return 1 if busy else None


class BackendError(ModelError):
    """The model could not be loaded or the server failed (timeout, bad response)."""


@dataclass
class Request:
    """One turn to generate: the conversation so far and what the reply must be."""

    messages: list[dict]
    schema: dict | None = None  # JSON schema the reply must follow (constrained decoding)
    images: list[np.ndarray] | None = None
    max_new_tokens: int = 160
    on_token: TokenFn | None = None


@dataclass
class Generation:
    text: str
    n_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose KV cache was reused
    ttft: float | None = None  # seconds from request to first token
    seconds: float = 0.0
    constrained: bool = False  # the schema was enforced while decoding
    n_images: int = 0  # images the model actually received
    timings: dict[str, float] = field(default_factory=dict)


class Backend(abc.ABC):
    """Interface; see TransformersBackend and OpenAIBackend."""

    name = "base"
    model_id = ""
    is_vlm = False

    @abc.abstractmethod
    def generate_batch(self, requests: list[Request], *, temperature: float = 0.0,
                       seed: int = 0) -> list[Generation]:
        """One assistant turn per request."""

    def generate(self, messages: list[dict], *, schema: dict | None = None,
                 images: list[np.ndarray] | None = None, max_new_tokens: int = 160,
                 on_token: TokenFn | None = None, temperature: float = 0.0,
                 seed: int = 0) -> Generation:
        """One assistant turn, streamed through on_token."""
        req = Request(messages, schema, images, max_new_tokens, on_token)
        return self.generate_batch([req], temperature=temperature, seed=seed)[0]


def text_messages(messages: list[dict]) -> list[dict]:
    """Messages for a chat template: tool turns become <tool_response> user turns."""
    out = []
    for m in messages:
        if m["role"] == "tool":
            out.append({"role": "user", "content": prompts.render("tool_response", content=m["content"])})
        else:
            out.append({"role": m["role"], "content": m.get("content") or ""})
    return out


def schema_prompt(schema: dict) -> str:
    """The schema as an instruction, for a server without structured output."""
    return prompts.render("schema_instruction", schema=json.dumps(schema, separators=(",", ":")))


# ------------------------------------------------------------------ constrained decoding
class _Grammar:
    """llguidance matchers for a batch: one per row with a schema (None for free rows)."""

    def __init__(self, lltok: Any, schemas: list[dict | None]):
        import llguidance

        self.rows = []
        for s in schemas:
            if s is None:
                self.rows.append(None)
                continue
            grammar = llguidance.LLMatcher.grammar_from_json_schema(
                json.dumps(s), defaults={"whitespace_flexible": False})
            m = llguidance.LLMatcher(lltok, grammar)
            if m.is_error():
                raise BackendError(f"the reply schema cannot be compiled: {m.get_error()}")
            self.rows.append(m)
        self.started = False

    def processor(self, eos_id: int):
        import torch
        from transformers import LogitsProcessor

        grammar = self

        class Constrain(LogitsProcessor):
            def __call__(self, input_ids, scores):
                vocab = scores.shape[1]
                for i, m in enumerate(grammar.rows):
                    if m is None:
                        continue
                    if grammar.started and not m.is_stopped():
                        m.consume_token(int(input_ids[i, -1]))
                    if m.is_stopped() or m.is_error():
                        allowed = np.zeros(vocab, dtype=bool)
                        allowed[eos_id] = True
                    else:
                        bits = np.unpackbits(np.frombuffer(m.compute_bitmask(), dtype=np.uint8),
                                             bitorder="little")
                        allowed = np.zeros(vocab, dtype=bool)
                        n = min(vocab, bits.size)
                        allowed[:n] = bits[:n].astype(bool)
                    scores[i, ~torch.from_numpy(allowed)] = -float("inf")
                grammar.started = True
                return scores

        return Constrain()


# ------------------------------------------------------------------ transformers
@functools.cache
def _token_streamer_class():
    """transformers' TextIteratorStreamer, releasing text at every token, not at word ends.

    The stock streamer holds text back until a space. A compact JSON record has none
    until its note, so the page saw nothing, and the first-token time measured the
    whole record, until the record was nearly written. (Defined on first use: transformers
    loads only with a model.)"""
    from transformers import TextIteratorStreamer

    class TokenStreamer(TextIteratorStreamer):
        def put(self, value):
            super().put(value)
            if not self.token_cache:
                return
            text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
            if len(text) > self.print_len and not text.endswith("\ufffd"):  # not mid-character
                self.on_finalized_text(text[self.print_len:])
                self.print_len = len(text)

    return TokenStreamer


def _token_streamer(tokenizer: Any):
    return _token_streamer_class()(tokenizer, skip_prompt=True, skip_special_tokens=True)


_CACHE: dict[tuple, TransformersBackend] = {}
_CACHE_LOCK = threading.Lock()


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self, model: Any, processor: Any, model_id: str, adapter: str | None = None):
        import torch

        self.model = model.eval()
        self.processor = processor  # a tokenizer, or a multimodal processor for a VLM
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.model_id = model_id + (f"+{Path(adapter).name}" if adapter else "")
        self.adapter = adapter
        self.is_vlm = hasattr(processor, "image_processor")
        self.device = next(model.parameters()).device
        self._torch = torch
        self._lock = threading.Lock()  # one generation at a time per loaded model
        self._lltok = None
        self._prefixes: list[tuple[tuple[int, ...], Any]] = []  # (prompt ids, KV cache), newest last
        gen_eos = getattr(model.generation_config, "eos_token_id", None)
        self.eos_ids = sorted({*(gen_eos if isinstance(gen_eos, list) else [gen_eos]),
                               self.tokenizer.eos_token_id} - {None})

    @classmethod
    def load(cls, model: str | os.PathLike | None = None, adapter: str | os.PathLike | None = None,
             device: str | None = None) -> TransformersBackend:
        """Load (or reuse) a model; `adapter` is a PEFT LoRA folder, merged into the weights."""
        import torch

        path = models.resolve_model(model)
        adapter_path = models.resolve_adapter(model, adapter)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        key = (path, adapter_path, device)
        with _CACHE_LOCK:
            if key not in _CACHE:
                dtype = "bfloat16" if device.startswith("cuda") else "float32"
                net, proc = models.load(path, adapter=adapter_path, dtype=dtype, device=device, merge=True)
                _CACHE[key] = cls(net, proc, Path(path).name if Path(path).exists() else path, adapter_path)
            return _CACHE[key]

    def _lltokenizer(self):
        if self._lltok is None:
            import llguidance.hf

            vocab = self.model.get_output_embeddings().weight.shape[0]
            self._lltok = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=vocab,
                                                       eos_token=self.eos_ids[0])
        return self._lltok

    def _prompt(self, req: Request) -> tuple[str, list]:
        msgs = text_messages(req.messages)
        pil = []
        if self.is_vlm:
            from PIL import Image

            pil = [Image.fromarray(np.asarray(im)) for im in req.images or []]
            # Images go first in the first user turn, as in Qwen2-VL's chat format.
            placed = False
            for m in msgs:
                parts = [{"type": "text", "text": m["content"]}]
                if m["role"] == "user" and not placed:
                    parts = [*({"type": "image"} for _ in pil), *parts]
                    placed = True
                m["content"] = parts
            return self.processor.apply_chat_template(msgs, add_generation_prompt=True,
                                                      tokenize=False), pil
        return self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False), pil

    def generate_batch(self, requests: list[Request], *, temperature: float = 0.0,
                       seed: int = 0) -> list[Generation]:
        torch = self._torch
        t0 = time.perf_counter()
        texts, images = zip(*(self._prompt(r) for r in requests), strict=True)
        self.tokenizer.padding_side = "left"
        if self.is_vlm:
            flat = [im for ims in images for im in ims]
            enc = self.processor(text=list(texts), images=flat or None, return_tensors="pt",
                                 padding=True)
        else:
            enc = self.tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)
        inputs = {k: v.to(self.device) for k, v in dict(enc).items()}
        n_prompt = int(inputs["input_ids"].shape[1])
        schemas = [r.schema for r in requests]
        grammar = _Grammar(self._lltokenizer(), schemas) if any(schemas) else None
        gen_kwargs: dict[str, Any] = dict(
            inputs, max_new_tokens=max(r.max_new_tokens for r in requests),
            pad_token_id=self.tokenizer.pad_token_id or self.eos_ids[0], eos_token_id=self.eos_ids)
        if grammar is not None:
            gen_kwargs["logits_processor"] = [grammar.processor(self.eos_ids[0])]
        if temperature > 0:
            torch.manual_seed(seed)
            gen_kwargs.update(do_sample=True, temperature=temperature)
        else:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        single = len(requests) == 1
        cached = 0
        if single and not self.is_vlm:
            ids = tuple(inputs["input_ids"][0].tolist())
            cached, past = self._reuse(ids)
            if past is not None:
                gen_kwargs["past_key_values"] = past
            gen_kwargs["return_dict_in_generate"] = True
        ttft: list[float | None] = [None]
        streamer = None
        if single:
            streamer = _token_streamer(self.tokenizer)
            gen_kwargs["streamer"] = streamer
        result: dict[str, Any] = {}
        threads = generation_threads() if self.device.type == "cpu" else None

        def _run() -> None:
            try:
                if threads is not None:
                    torch.set_num_threads(threads)
                with torch.inference_mode():
                    result["out"] = self.model.generate(**gen_kwargs)
            except Exception as exc:  # re-raised in the caller's thread
                result["error"] = exc
                if streamer is not None:
                    streamer.on_finalized_text("", stream_end=True)

        with self._lock:
            if streamer is None:
                _run()
            else:
                worker = threading.Thread(target=_run, daemon=True)
                worker.start()
                for piece in streamer:
                    if piece and ttft[0] is None:
                        ttft[0] = time.perf_counter() - t0
                    if piece and requests[0].on_token is not None:
                        requests[0].on_token(piece)
                worker.join()
            if "error" in result:
                raise BackendError(f"generation failed in {self.model_id}: {result['error']}") \
                    from result["error"]
            out = result["out"]
            seqs = out.sequences if hasattr(out, "sequences") else out
            if single and not self.is_vlm and getattr(out, "past_key_values", None) is not None:
                self._remember(ids, out.past_key_values)
        seconds = time.perf_counter() - t0
        gens = []
        for i, r in enumerate(requests):
            new = seqs[i, n_prompt:].tolist()
            ends = [k for k, tok in enumerate(new) if tok in self.eos_ids]
            new = new[:ends[0] + 1] if ends else new  # rows that finished early are padded
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            n_real = int(inputs["attention_mask"][i].sum()) if "attention_mask" in inputs else n_prompt
            gens.append(Generation(text=text, n_tokens=len(new), prompt_tokens=n_real,
                                   cached_tokens=cached, ttft=ttft[0] if single else None,
                                   seconds=seconds, constrained=r.schema is not None,
                                   n_images=len(r.images or []) if self.is_vlm else 0))
        return gens

    # -- prompt-prefix reuse (one sequence at a time)
    def _reuse(self, ids: tuple[int, ...]) -> tuple[int, Any]:
        best, cache = 0, None
        for key, kv in self._prefixes:
            n = 0
            for a, b in zip(key, ids, strict=False):
                if a != b:
                    break
                n += 1
            n = min(n, len(ids) - 1)  # at least one new token must go through the model
            if n > best:
                best, cache = n, kv
        if cache is None or best < 16:
            return 0, None
        past = copy.deepcopy(cache)
        _keep(past, best)
        return best, past

    def _remember(self, ids: tuple[int, ...], past: Any) -> None:
        _keep(past, len(ids))
        self._prefixes = [(k, v) for k, v in self._prefixes if k != ids][-(PREFIX_CACHE - 1):]
        self._prefixes.append((ids, past))


def _keep(cache: Any, n: int) -> None:
    """Cut a KV cache back to its first n tokens (Cache.crop takes how many to remove)."""
    extra = cache.get_seq_length() - n
    if extra > 0:
        cache.crop(-extra)


# ------------------------------------------------------------------ openai
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


class RulesBackend(Backend):
    """No model: the Exp-CoT engine decides every face and the rules answer every question
    (agent/graph.py runs them in place of the model's turns). `--backend engine`, and the
    default when no fine-tuned adapter has been shipped (see `make_backend("auto")`)."""

    name = "engine"
    model_id = "exp-cot-engine"

    def generate_batch(self, requests: list[Request], *, temperature: float = 0.0,
                       seed: int = 0) -> list[Generation]:
        raise BackendError("the rule-based engine does not generate text")


def resolve_backend(backend: str, model: str | None = None, adapter: str | None = None) -> str:
    """The backend "auto" stands for: the in-process model when a model or adapter is named
    (argument or $FACEREASON_ADAPTER) or the project's fine-tuned adapter is shipped as the
    default (agent/adapters/facereason-smollm2-lora/ship.json: the evaluation shows it at or above
    the engine); otherwise the rule-based engine, never the untrained base model."""
    if backend != "auto":
        return backend
    asked = adapter if adapter is not None else os.environ.get(models.ENV_ADAPTER, "")
    named = model is not None or str(asked).lower() not in ("", "none")
    shipped = models.ships_as_default() and models.resolve_adapter(model, adapter)
    return "transformers" if named or shipped else "engine"


def make_backend(backend: str | Backend = "auto", *, model: str | None = None,
                 adapter: str | None = None, base_url: str | None = None,
                 api_key: str | None = None, **kwargs: Any) -> Backend:
    """One factory for every backend name (see resolve_backend for "auto")."""
    if isinstance(backend, Backend):
        return backend
    backend = resolve_backend(backend, model, adapter)
    if backend == "engine":
        return RulesBackend()
    if backend == "transformers":
        return TransformersBackend.load(model, adapter, device=kwargs.get("device"))
    if backend == "openai":
        if adapter:
            raise BackendError("the openai backend serves adapters by name: pass --model NAME "
                               "(vllm serve ... --lora-modules NAME=DIR)")
        return OpenAIBackend(base_url=base_url, model=model, api_key=api_key,
                             timeout=kwargs.get("timeout", 60.0), retries=kwargs.get("retries", 2),
                             structured=kwargs.get("structured", True))
    raise BackendError(f"unknown backend '{backend}'; choose auto, transformers, openai or engine")
