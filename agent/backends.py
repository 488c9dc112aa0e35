"""Model backends behind one interface: `backend.generate(messages, ...) -> Generation`.

- `transformers`: a local causal LM or image-text-to-text model (default: the
  SmolLM2-135M-Instruct asset), optional PEFT LoRA adapter, token streaming,
  CPU by default and the GPU when there is one. A VLM receives key frames.
- `openai`: any OpenAI-compatible chat server (vLLM first) over HTTP, with SSE
  streaming, tool calls, timeouts and retries.

Messages use the OpenAI shape. Local models see tool calls as the Hermes/Qwen
text they generate (`<tool_call>{...}</tool_call>`); when a chat template has no
tool support, tool results are sent as a user turn wrapped in
`<tool_response>` (what Qwen2.5's template renders for a tool turn), so one
conversation format serves fine-tuning and inference alike.
"""

from __future__ import annotations

import abc
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import prompts
from tools.errors import FaceReasonError

TokenFn = Callable[[str], None]
StopFn = Callable[[str], bool]

DEFAULT_MODEL = "smollm2-135m"
# Where issue 5's fine-tuning writes its LoRA adapter; used by default when present.
DEFAULT_ADAPTER = Path(__file__).resolve().parents[1] / "models" / "facereason-smollm2-lora"
ENV_ADAPTER = "FACEREASON_ADAPTER"
ENV_BASE_URL = "FACEREASON_OPENAI_BASE_URL"
ENV_MODEL = "FACEREASON_OPENAI_MODEL"
ENV_KEY = "FACEREASON_OPENAI_API_KEY"
ENV_THREADS = "FACEREASON_TORCH_THREADS"


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


class BackendError(FaceReasonError):
    """The model could not be loaded or the server failed (timeout, bad response)."""

    code = "backend_error"
    http_status = 502


@dataclass
class Generation:
    text: str
    tool_calls: list[dict] | None = None  # structured calls from an OpenAI server
    n_tokens: int = 0
    prompt_tokens: int = 0
    ttft: float | None = None  # seconds from request to first token
    seconds: float = 0.0
    stopped_early: bool = False
    n_images: int = 0  # images the model actually received
    timings: dict[str, float] = field(default_factory=dict)


class Backend(abc.ABC):
    """Interface; see TransformersBackend and OpenAIBackend."""

    name = "base"
    model_id = ""
    native_tools = False  # True: tools go through the template/API, not our system prompt
    is_vlm = False

    @abc.abstractmethod
    def generate(self, messages: list[dict], *, tools: list[dict] | None = None,
                 images: list[np.ndarray] | None = None, max_new_tokens: int = 512,
                 on_token: TokenFn | None = None, stop_check: StopFn | None = None,
                 temperature: float = 0.0, seed: int = 0) -> Generation:
        """One assistant turn, streamed through on_token, stopped early when stop_check says."""


def text_messages(messages: list[dict]) -> list[dict]:
    """Messages for a template without tool support: tool turns become user turns."""
    out = []
    for m in messages:
        if m["role"] == "tool":
            out.append({"role": "user", "content": prompts.render("tool_response", content=m["content"])})
        else:
            out.append({"role": m["role"], "content": m.get("content") or ""})
    return out


# ------------------------------------------------------------------ transformers
def _compat() -> None:
    # CUDA torchvision beside CPU torch breaks transformers' imports (ENVIRONMENT.md).
    from tools.torchvision_compat import ensure

    ensure()


def resolve_model(model: str | os.PathLike | None) -> str:
    """An asset name, a local folder or a hub id -> what from_pretrained takes."""
    from tools import assets

    if model is None or str(model) in (DEFAULT_MODEL, "default"):
        return str(assets.model_dir())
    p = Path(model).expanduser()
    if p.exists():
        return str(p)
    if str(model).startswith((".", "/", "~")):
        raise BackendError(f"model folder {model} does not exist")
    return str(model)


def resolve_adapter(model: str | os.PathLike | None, adapter: str | os.PathLike | None) -> str | None:
    """Explicit adapter, else $FACEREASON_ADAPTER, else the project's own when it exists
    (only for the default model). "none" turns the default off."""
    if adapter is not None:
        if str(adapter).lower() == "none":
            return None
        p = Path(adapter).expanduser()
        if not (p / "adapter_config.json").exists():
            raise BackendError(f"adapter {adapter} is not a PEFT adapter folder (no adapter_config.json)")
        return str(p)
    if os.environ.get(ENV_ADAPTER):
        return resolve_adapter(model, os.environ[ENV_ADAPTER])
    if (model is None or str(model) in (DEFAULT_MODEL, "default")) and \
            (DEFAULT_ADAPTER / "adapter_config.json").exists():
        return str(DEFAULT_ADAPTER)
    return None


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
        template = getattr(processor, "chat_template", None) or getattr(self.tokenizer, "chat_template", None)
        self.native_tools = bool(template) and "tools" in str(template)
        self.device = next(model.parameters()).device
        self._torch = torch
        self._lock = threading.Lock()  # one generation at a time per loaded model

    @classmethod
    def load(cls, model: str | os.PathLike | None = None, adapter: str | os.PathLike | None = None,
             device: str | None = None) -> TransformersBackend:
        """Load (or reuse) a model; `adapter` is a PEFT LoRA folder."""
        path = resolve_model(model)
        adapter_path = resolve_adapter(model, adapter)
        _compat()
        import torch
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
        )
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
        )
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a "Loading weights" bar means nothing to a user
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        key = (path, adapter_path, device)
        with _CACHE_LOCK:
            if key in _CACHE:
                return _CACHE[key]
            offline = not Path(path).exists()
            try:
                config = AutoConfig.from_pretrained(path)
                dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
                if config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
                    proc = AutoProcessor.from_pretrained(path)
                    net = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype)
                else:
                    proc = AutoTokenizer.from_pretrained(path)
                    net = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
            except OSError as exc:
                hint = " (no model hub is reachable here: pass a local folder)" if offline else ""
                raise BackendError(f"could not load model '{model}'{hint}: {exc}") from None
            if adapter_path:
                from peft import PeftModel

                net = PeftModel.from_pretrained(net, adapter_path)
            net.to(device)
            backend = cls(net, proc, Path(path).name if Path(path).exists() else path, adapter_path)
            _CACHE[key] = backend
            return backend

    def _inputs(self, messages: list[dict], tools: list[dict] | None,
                images: list[np.ndarray] | None) -> dict:
        msgs = [dict(m) for m in messages] if self.native_tools else text_messages(messages)
        kwargs: dict[str, Any] = {"add_generation_prompt": True, "tokenize": False}
        if self.native_tools and tools:
            kwargs["tools"] = tools
        if self.is_vlm:
            from PIL import Image

            pil = [Image.fromarray(np.asarray(im)) for im in images or []]
            # Images go first in the first user turn, as in Qwen2-VL's chat format.
            for m in msgs:
                if m["role"] == "user":
                    m["content"] = [*({"type": "image"} for _ in pil),
                                    {"type": "text", "text": m["content"]}]
                    break
            for m in msgs:
                if isinstance(m.get("content"), str):
                    m["content"] = [{"type": "text", "text": m["content"]}]
            text = self.processor.apply_chat_template(msgs, **kwargs)
            return dict(self.processor(text=[text], images=pil or None, return_tensors="pt"))
        text = self.tokenizer.apply_chat_template(msgs, **kwargs)
        return dict(self.tokenizer([text], return_tensors="pt", add_special_tokens=False))

    def generate(self, messages: list[dict], *, tools: list[dict] | None = None,
                 images: list[np.ndarray] | None = None, max_new_tokens: int = 512,
                 on_token: TokenFn | None = None, stop_check: StopFn | None = None,
                 temperature: float = 0.0, seed: int = 0) -> Generation:
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        torch = self._torch
        t0 = time.perf_counter()
        inputs = {k: v.to(self.device) for k, v in self._inputs(messages, tools, images).items()}
        n_prompt = int(inputs["input_ids"].shape[1])
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        stop = threading.Event()

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kw) -> bool:
                return stop.is_set()

        gen_kwargs = dict(inputs, max_new_tokens=max_new_tokens, streamer=streamer,
                          stopping_criteria=StoppingCriteriaList([_Stop()]),
                          pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        if temperature > 0:
            torch.manual_seed(seed)
            gen_kwargs.update(do_sample=True, temperature=temperature)
        else:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        result: dict[str, Any] = {}

        threads = generation_threads() if self.device.type == "cpu" else None

        def _run() -> None:
            try:
                if threads is not None:
                    torch.set_num_threads(threads)
                with torch.inference_mode():
                    result["ids"] = self.model.generate(**gen_kwargs)
            except Exception as exc:  # re-raised in the caller's thread
                result["error"] = exc
                streamer.on_finalized_text("", stream_end=True)

        with self._lock:
            worker = threading.Thread(target=_run, daemon=True)
            worker.start()
            text, ttft = "", None
            for piece in streamer:
                if not piece:
                    continue
                if ttft is None:
                    ttft = time.perf_counter() - t0
                text += piece
                if on_token is not None:
                    on_token(piece)
                if stop_check is not None and not stop.is_set() and stop_check(text):
                    stop.set()
            worker.join()
        if "error" in result:
            raise BackendError(f"generation failed in {self.model_id}: {result['error']}") from result["error"]
        n_new = int(result["ids"].shape[1] - n_prompt)
        return Generation(text=text, n_tokens=n_new, prompt_tokens=n_prompt, ttft=ttft,
                          seconds=time.perf_counter() - t0, stopped_early=stop.is_set(),
                          n_images=len(images or []) if self.is_vlm else 0)


# ------------------------------------------------------------------ openai
class OpenAIBackend(Backend):
    """An OpenAI-compatible chat server (vLLM, llama.cpp server, ...) over HTTP.

    `native_tools=False` (default) describes the tools in the system prompt and
    reads `<tool_call>` blocks from the text, which works with any server and with
    this project's fine-tuned model; `native_tools=True` sends `tools` and reads
    structured `tool_calls` (vLLM needs --enable-auto-tool-choice for that).
    """

    name = "openai"

    def __init__(self, base_url: str | None = None, model: str | None = None,
                 api_key: str | None = None, timeout: float = 60.0, retries: int = 2,
                 native_tools: bool = False):
        import httpx

        base_url = base_url or os.environ.get(ENV_BASE_URL) or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise BackendError(f"the openai backend needs a base URL (--base-url or ${ENV_BASE_URL})")
        base_url = base_url.rstrip("/")
        if not base_url.endswith("/v1"):
            base_url += "/v1"
        self.base_url = base_url
        key = api_key or os.environ.get(ENV_KEY) or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.timeout, self.retries, self.native_tools = timeout, retries, native_tools
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

    def generate(self, messages: list[dict], *, tools: list[dict] | None = None,
                 images: list[np.ndarray] | None = None, max_new_tokens: int = 512,
                 on_token: TokenFn | None = None, stop_check: StopFn | None = None,
                 temperature: float = 0.0, seed: int = 0) -> Generation:
        msgs = messages if self.native_tools else text_messages(messages)
        body: dict[str, Any] = {"model": self.model_id, "messages": msgs, "stream": True,
                                "max_tokens": max_new_tokens, "temperature": temperature, "seed": seed,
                                "stream_options": {"include_usage": True}}
        if self.native_tools and tools:
            body["tools"] = tools
        t0 = time.perf_counter()
        state: dict[str, Any] = {}

        def call() -> Generation:
            text, ttft, stopped, usage = "", None, False, {}
            calls: dict[int, dict] = {}
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
                        delta = choice.get("delta") or {}
                        piece = delta.get("content") or ""
                        for tc in delta.get("tool_calls") or []:
                            slot = calls.setdefault(tc.get("index", 0),
                                                    {"id": "", "type": "function",
                                                     "function": {"name": "", "arguments": ""}})
                            slot["id"] = tc.get("id") or slot["id"]
                            fn = tc.get("function") or {}
                            slot["function"]["name"] += fn.get("name") or ""
                            slot["function"]["arguments"] += fn.get("arguments") or ""
                        if piece:
                            if ttft is None:
                                ttft = time.perf_counter() - t0
                            state["started"] = True
                            text += piece
                            if on_token is not None:
                                on_token(piece)
                    if stop_check is not None and text and stop_check(text):
                        stopped = True
                        break
                if not text and not calls and not usage and not stopped:
                    raise BackendError(f"the server at {self.base_url} sent an empty stream")
            return Generation(text=text, tool_calls=[calls[i] for i in sorted(calls)] or None,
                              n_tokens=int(usage.get("completion_tokens", 0)) or _approx_tokens(text),
                              prompt_tokens=int(usage.get("prompt_tokens", 0)), ttft=ttft,
                              seconds=time.perf_counter() - t0, stopped_early=stopped)

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
        return Generation(text=text, tool_calls=msg.get("tool_calls") or None,
                          n_tokens=int(usage.get("completion_tokens", 0)) or _approx_tokens(text),
                          prompt_tokens=int(usage.get("prompt_tokens", 0)),
                          ttft=time.perf_counter() - t0, seconds=time.perf_counter() - t0)


def _approx_tokens(text: str) -> int:
    # Only when a server reports no usage: about four characters a token for English.
    return max(1, len(text) // 4) if text else 0


def make_backend(backend: str = "transformers", *, model: str | None = None, adapter: str | None = None,
                 base_url: str | None = None, api_key: str | None = None,
                 **kwargs: Any) -> Backend:
    """One factory for every backend name."""
    if isinstance(backend, Backend):
        return backend
    if backend == "transformers":
        return TransformersBackend.load(model, adapter, device=kwargs.get("device"))
    if backend == "openai":
        if adapter:
            raise BackendError("the openai backend serves adapters by name: pass --model NAME "
                               "(vllm serve ... --lora-modules NAME=DIR)")
        return OpenAIBackend(base_url=base_url, model=model, api_key=api_key,
                             timeout=kwargs.get("timeout", 60.0), retries=kwargs.get("retries", 2),
                             native_tools=kwargs.get("native_tools", False))
    raise BackendError(f"unknown backend '{backend}'; choose transformers or openai")
