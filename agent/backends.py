"""Model backends behind one interface: `backend.generate_batch(requests) -> [Generation]`.

The interface, the rule-based stand-in and the one factory (`make_backend`) live here;
each model backend has its own module:

- agent/transformers_backend.py: a local causal LM or image-text-to-text model
  (default: the SmolLM2-135M-Instruct asset with the shipped LoRA merged in), its
  reply schema enforced while decoding with llguidance.
- agent/openai_backend.py: any OpenAI-compatible chat server (vLLM first) over HTTP,
  a schema sent as vLLM's `json_schema` response format.

Messages use the OpenAI shape. A tool result is a user turn wrapped in
<tool_response> (what Qwen2.5's template renders for a tool turn), so one
conversation format serves fine-tuning and inference alike.
"""

from __future__ import annotations

import abc
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
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
    steps: int | None = None  # forward passes of the model (prefill included), where known
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
        from agent.transformers_backend import TransformersBackend

        return TransformersBackend.load(model, adapter, device=kwargs.get("device"))
    if backend == "openai":
        if adapter:
            raise BackendError("the openai backend serves adapters by name: pass --model NAME "
                               "(vllm serve ... --lora-modules NAME=DIR)")
        from agent.openai_backend import OpenAIBackend

        return OpenAIBackend(base_url=base_url, model=model, api_key=api_key,
                             timeout=kwargs.get("timeout", 60.0), retries=kwargs.get("retries", 2),
                             structured=kwargs.get("structured", True))
    raise BackendError(f"unknown backend '{backend}'; choose auto, transformers, openai or engine")
