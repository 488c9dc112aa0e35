"""The LLM caption judge: any OpenAI-compatible chat server (vLLM, a hosted API) with the
prompts in prompts/judge_*.txt, JSON-constrained per request, with retries and an
on-disk cache. The judge interface is in evals/judges.py.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Literal

import prompts
from evals.judges import LABELS, MAX_EVENTS, JudgeError, Relation


def _numbered(items: list[str]) -> str:
    return "\n".join(f"{i}. {t}" for i, t in enumerate(items, 1))


class JudgeCache:
    """A small sqlite key-value store, so a rerun with the same judge costs nothing.

    Keys hash (judge model, task, prompt version, inputs); values are the parsed
    JSON answers. Safe to share between the runner's threads.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        with self._lock:
            self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT)")
            self._db.commit()

    @staticmethod
    def key(*parts: object) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> object | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: object) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO answers (key, value) VALUES (?, ?)", (key, json.dumps(value))
            )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


_SCHEMAS: dict[str, dict] = {
    "events": {
        "type": "object",
        "properties": {"events": {"type": "array", "items": {"type": "string", "maxLength": 200},
                                  "maxItems": 10}},
        "required": ["events"],
        "additionalProperties": False,
    },
    "relations": {
        "type": "object",
        "properties": {
            "relations": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer"},
                        "relationship": {"type": "string", "enum": list(LABELS)},
                        "reason": {"type": "string"},
                    },
                    "required": ["index", "relationship", "reason"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["relations"],
        "additionalProperties": False,
    },
    "matches": {
        "type": "object",
        "properties": {
            "matches": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"index": {"type": "integer"}, "match": {"type": "integer"}},
                    "required": ["index", "match"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["matches"],
        "additionalProperties": False,
    },
}

REASON_CHARS = 200  # a relation's reason: one sentence, so a small judge cannot ramble to the cap


def request_schema(task: str, n: int | list[int] | None = None) -> dict:
    """The JSON schema of one judge request, sized to it: `n` events get exactly `n`
    relations (or matches) with indexes 1..n, and a match is 0 (none) .. len(events_b).
    A server that enforces the schema then cannot return a wrong count, which is what
    a small judge model gets wrong most."""
    schema = copy.deepcopy(_SCHEMAS[task])
    if task == "events" or n is None:
        return schema
    n_a, n_b = (n if isinstance(n, list) else [n, None])
    arr = schema["properties"][task]
    arr.update(minItems=n_a, maxItems=n_a)
    props = arr["items"]["properties"]
    props["index"].update(minimum=1, maximum=n_a)
    if "reason" in props:
        props["reason"]["maxLength"] = REASON_CHARS
    if "match" in props and n_b is not None:
        props["match"].update(minimum=0, maximum=n_b)
    return schema


_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class _BadAnswer(ValueError):
    """The server answered, but not with what the prompt asked for (worth a retry)."""


def _parse_json(text: str) -> object:
    """JSON from a chat answer, tolerating a ```json fence around it."""
    t = text.strip()
    fence = re.match(r"^```(?:json|JSON)?\s*(.*?)\s*```$", t, re.S)
    if fence:
        t = fence.group(1)
    try:
        return json.loads(t)
    except json.JSONDecodeError:
        # Some models add a sentence before or after the object: take the outermost braces.
        a, b = t.find("{"), t.rfind("}")
        if a >= 0 and b > a:
            try:
                return json.loads(t[a : b + 1])
            except json.JSONDecodeError:
                pass
    raise _BadAnswer(f"not JSON: {text[:80]!r}")


class LLMJudge:
    """A judge backed by an OpenAI-compatible chat-completions server.

    `base_url` is the API root (e.g. `http://127.0.0.1:8000/v1`). `json_mode`
    picks how the answer is constrained: "schema" (OpenAI structured outputs,
    which vLLM also honours), "object" (`{"type": "json_object"}`) or "none"
    (prompt only). Failed requests (connection errors, 429/5xx) and answers
    that do not parse are retried `max_retries` times with exponential backoff.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        cache_path: str | Path | None = None,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        timeout_s: float = 120.0,
        json_mode: Literal["schema", "object", "none"] = "schema",
        temperature: float = 0.0,
        max_tokens: int = 1024,
    ):
        import httpx

        if not base_url.startswith(("http://", "https://")):
            raise JudgeError(f"The judge's base URL must start with http:// or https://, got '{base_url}'.")
        if not model:
            raise JudgeError("The LLM judge needs a model name (--model).")
        if json_mode not in ("schema", "object", "none"):
            raise JudgeError(f"json_mode must be schema, object or none, got '{json_mode}'.")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"llm:{model}"
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.json_mode = json_mode
        self.temperature = temperature
        self.max_tokens = max_tokens
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)
        self.cache = JudgeCache(cache_path) if cache_path else None
        self.requests_sent = 0  # counts HTTP requests, so tests and reports can see cache hits

    @staticmethod
    def prompt_version(name: str) -> str:
        """Content hash of a prompt file: editing a prompt invalidates its cached answers."""
        return hashlib.sha256(prompts.load(name).encode()).hexdigest()[:12]

    def close(self) -> None:
        self._http.close()
        if self.cache is not None:
            self.cache.close()

    def _chat(self, prompt: str, schema_name: str, n: int | list[int] | None = None) -> str:
        body: dict = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.json_mode == "schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema_name, "schema": request_schema(schema_name, n),
                                "strict": True},
            }
        elif self.json_mode == "object":
            body["response_format"] = {"type": "json_object"}
        self.requests_sent += 1
        resp = self._http.post("/chat/completions", json=body)
        if resp.status_code in _RETRY_STATUS:
            raise _BadAnswer(f"HTTP {resp.status_code}")
        if resp.status_code >= 400:
            raise JudgeError(
                f"The judge server at {self.base_url} refused the request "
                f"(HTTP {resp.status_code}): {resp.text[:200]}"
            )
        try:
            return resp.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise _BadAnswer(f"not a chat completion: {resp.text[:80]!r}") from None

    def _ask(self, task: str, prompt_name: str, inputs: dict, check) -> object:
        """Render, send, parse and validate one request, with the cache and retries."""
        import httpx

        key = JudgeCache.key(self.model, task, self.prompt_version(prompt_name), inputs)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return hit
        prompt = prompts.render(prompt_name, **{k: v for k, v in inputs.items() if k != "n"})
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                value = check(_parse_json(self._chat(prompt, task, inputs.get("n"))))
            except (_BadAnswer, httpx.TransportError) as exc:
                last = str(exc) or type(exc).__name__
                continue
            if self.cache is not None:
                self.cache.put(key, value)
            return value
        raise JudgeError(
            f"The judge at {self.base_url} gave no valid {task} answer after "
            f"{self.max_retries + 1} tries; last problem: {last}."
        )

    def extract_events(self, caption: str) -> list[str]:
        if not caption.strip():
            return []

        def check(obj):
            if not isinstance(obj, dict) or not isinstance(obj.get("events"), list):
                raise _BadAnswer("no 'events' list")
            events = [str(e).strip() for e in obj["events"] if str(e).strip()]
            return events[:MAX_EVENTS]

        return list(self._ask("events", "judge_events", {"caption": caption}, check))

    def classify(self, events: list[str], caption: str) -> list[Relation]:
        if not events:
            return []
        if not caption.strip():  # nothing can entail or contradict: no request needed
            return [Relation(e, "neutral", reason="empty caption") for e in events]

        def check(obj):
            rel = obj.get("relations") if isinstance(obj, dict) else None
            if not isinstance(rel, list) or len(rel) != len(events):
                raise _BadAnswer(f"expected {len(events)} relations")
            out = []
            for r in rel:
                label = str(r.get("relationship", "")).strip().lower() if isinstance(r, dict) else ""
                if label not in LABELS:
                    raise _BadAnswer(f"unknown relationship {label!r}")
                out.append([label, str(r.get("reason", ""))])
            return out

        inputs = {"caption": caption, "events": _numbered(events), "n": len(events)}
        answer = self._ask("relations", "judge_relations", inputs, check)
        return [Relation(e, lab, reason=why) for e, (lab, why) in zip(events, answer, strict=True)]

    def align(self, events_a: list[str], events_b: list[str]) -> list[int | None]:
        if not events_a:
            return []
        if not events_b:
            return [None] * len(events_a)

        def check(obj):
            m = obj.get("matches") if isinstance(obj, dict) else None
            if not isinstance(m, list) or len(m) != len(events_a):
                raise _BadAnswer(f"expected {len(events_a)} matches")
            out = []
            for r in m:
                j = r.get("match") if isinstance(r, dict) else None
                if not isinstance(j, int) or not 0 <= j <= len(events_b):
                    raise _BadAnswer(f"match {j!r} out of range")
                out.append(j)
            return out

        inputs = {"events_a": _numbered(events_a), "events_b": _numbered(events_b),
                  "n": [len(events_a), len(events_b)]}
        answer = self._ask("matches", "judge_align", inputs, check)
        return [j - 1 if j else None for j in answer]
