"""The in-process backend: a transformers causal LM or image-text-to-text model.

Default: the SmolLM2-135M-Instruct asset with the shipped LoRA merged in, on the
CPU (the GPU when there is one). A request's JSON schema is enforced while
decoding with llguidance (a token mask per step; grammars compile in about a
millisecond, so a schema built per face costs nothing). Requests are decoded
together in one batch; a single request streams its tokens and reuses the KV
cache of the longest prompt prefix it shares with an earlier one (the system
prompt, or a whole chat history).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent import models
from agent.backends import (
    PREFIX_CACHE,
    Backend,
    BackendError,
    Generation,
    Request,
    generation_threads,
    text_messages,
)


# ------------------------------------------------------------------ constrained decoding
def _matcher(lltok: Any, schema: dict) -> Any:
    import llguidance

    grammar = llguidance.LLMatcher.grammar_from_json_schema(
        json.dumps(schema), defaults={"whitespace_flexible": False})
    m = llguidance.LLMatcher(lltok, grammar)
    if m.is_error():
        raise BackendError(f"the reply schema cannot be compiled: {m.get_error()}")
    return m


class _Follow:
    """An llguidance matcher kept in step with a row's generated tokens.

    transformers calls a logits processor once per new token in plain decoding, but in
    assisted decoding once per drafted position, then drops the drafts the model did not
    confirm. So the matcher is synced to whatever tokens the row holds now: rolled back to
    the common prefix, then fed the rest."""

    def __init__(self, matcher: Any, n_prompt: int):
        self.m, self.n_prompt, self.seen = matcher, n_prompt, []

    def sync(self, row: Any) -> Any:
        tokens = row[self.n_prompt:].tolist()
        common = 0
        for a, b in zip(self.seen, tokens, strict=False):
            if a != b:
                break
            common += 1
        if len(self.seen) > common:
            self.m.rollback(len(self.seen) - common)
            del self.seen[common:]
        for t in tokens[common:]:
            if self.m.is_stopped() or self.m.is_error():
                break
            self.m.consume_token(int(t))
            self.seen.append(int(t))
        return self.m


class _Grammar:
    """llguidance matchers for a batch: one per row with a schema (None for free rows)."""

    def __init__(self, lltok: Any, schemas: list[dict | None], n_prompt: int):
        self.rows = [None if s is None else _Follow(_matcher(lltok, s), n_prompt) for s in schemas]

    def processor(self, eos_id: int):
        import torch
        from transformers import LogitsProcessor

        grammar = self

        class Constrain(LogitsProcessor):
            def __call__(self, input_ids, scores):
                vocab = scores.shape[1]
                for i, row in enumerate(grammar.rows):
                    if row is None:
                        continue
                    m = row.sync(input_ids[i])
                    allowed = np.zeros(vocab, dtype=bool)
                    if m.is_stopped() or m.is_error():
                        allowed[eos_id] = True
                    else:
                        bits = np.unpackbits(np.frombuffer(m.compute_bitmask(), dtype=np.uint8),
                                             bitorder="little")
                        n = min(vocab, bits.size)
                        allowed[:n] = bits[:n].astype(bool)
                    scores[i, ~torch.from_numpy(allowed)] = -float("inf")
                return scores

        return Constrain()


@functools.cache
def _forced_drafter_class():
    """A draft for transformers' assisted decoding: the tokens the grammar forces next.

    A record's keys and punctuation (`{"cite":["`, `"],"arc":["`) are the only tokens its
    schema allows at their place: about half of a decision record. Assisted decoding
    checks a draft in the forward pass that yields the next free token, so forced tokens
    cost no decode step of their own, and the output is the one greedy decoding gives
    (a draft the model would not pick is dropped). llguidance computes the forced tokens."""
    from transformers.generation.candidate_generator import CandidateGenerator

    class ForcedDraft(CandidateGenerator):
        def __init__(self, follow: _Follow, max_length: int):
            self.follow, self.max_length = follow, max_length

        def get_candidates(self, input_ids, **_):
            import torch

            m = self.follow.sync(input_ids[0])
            room = self.max_length - int(input_ids.shape[1]) - 1
            ff = [] if m.is_stopped() or m.is_error() or room <= 0 else m.compute_ff_tokens()[:room]
            if not ff:
                return input_ids, None
            draft = torch.tensor([ff], dtype=input_ids.dtype, device=input_ids.device)
            return torch.cat([input_ids, draft], dim=1), None

        def update_candidate_strategy(self, input_ids, scores, num_matches):
            return None

    return ForcedDraft


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
    # Draft the tokens a schema forces (ForcedDraft) for a single constrained request: the
    # same output, about half the decode steps of a record. False decodes token by token.
    draft_forced = True

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
        grammar = _Grammar(self._lltokenizer(), schemas, n_prompt) if any(schemas) else None
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
        drafter = None
        if single and not self.is_vlm:
            ids = tuple(inputs["input_ids"][0].tolist())
            cached, past = self._reuse(ids)
            # Two ways to save time, and transformers' assisted decoding cannot start from a
            # reused cache (its first step reads the whole prompt again: a different record).
            # A continuation (a tool result, a chat history) reuses its prefix; a new prompt
            # drafts the tokens its schema forces.
            if self.draft_forced and schemas[0] and cached < len(ids) // 2:
                cached, past = 0, None
                # the mask's matcher: _Follow.sync puts it where the draft starts
                drafter = _forced_drafter_class()(grammar.rows[0], n_prompt + requests[0].max_new_tokens)
                gen_kwargs["prompt_lookup_num_tokens"] = 1  # selects assisted decoding; ForcedDraft drafts
            if past is not None:
                gen_kwargs["past_key_values"] = past
            gen_kwargs["return_dict_in_generate"] = True
        ttft: list[float | None] = [None]
        steps: list[int] = []
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
                if drafter is not None:  # generate asks the model for its draft source
                    self.model._get_candidate_generator = lambda *_, **__: drafter
                with torch.inference_mode():
                    hook = self.model.register_forward_pre_hook(lambda *_: steps.append(1))
                    try:
                        result["out"] = self.model.generate(**gen_kwargs)
                    finally:
                        hook.remove()
            except Exception as exc:  # re-raised in the caller's thread
                result["error"] = exc
                if streamer is not None:
                    streamer.on_finalized_text("", stream_end=True)
            finally:
                self.model.__dict__.pop("_get_candidate_generator", None)

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
                                   n_images=len(r.images or []) if self.is_vlm else 0,
                                   steps=len(steps)))
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
