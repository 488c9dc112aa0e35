"""Caption judges: the swappable part of AutoDQ and TEM.

A judge does three things, each on plain strings:

- `extract_events(caption)`: at most 10 atomic events, in time order;
- `classify(events, caption)`: for each event, entailment / neutral /
  contradiction against a caption (one call for the whole list, as Tarsier's
  DREAM-1K evaluation does);
- `align(events_a, events_b)`: for each event of A, the index of the event of B
  that entails it, or None (TEM needs event-to-event matches).

`LLMJudge` asks any OpenAI-compatible chat server (vLLM, a hosted API) with the
prompts in prompts/judge_*.txt, JSON-constrained, with retries and an on-disk
cache. `OfflineJudge` runs here with no server: clause splitting on temporal
markers and conjunctions (each clause keeps its part of the video), a
facial-expression lexicon (evals/facial.py: AUs, emotions, valence, negation)
for contradictions and paraphrases, and MiniLM sentence embeddings for what the
lexicon does not cover; word lists in prompts/judge_offline_rules.yaml,
prompts/facial_actions.yaml and prompts/emotion_lexicon.yaml.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

import prompts
from evals import facial
from tools.errors import FaceReasonError

Label = Literal["entailment", "neutral", "contradiction"]
LABELS: tuple[str, ...] = ("entailment", "neutral", "contradiction")
MAX_EVENTS = 10  # DREAM-1K's AutoDQ asks for at most 10 events per caption


class JudgeError(FaceReasonError):
    """The judge could not give a valid answer (server down, bad replies, bad settings)."""

    code = "judge_failed"
    http_status = 502


@dataclass
class Relation:
    """How a caption relates to one event, with the evidence for it."""

    event: str
    label: Label
    evidence: str | None = None  # the clause of the caption that decided it (offline judge)
    score: float | None = None  # cosine similarity to that clause (offline judge)
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class Judge(Protocol):
    """What AutoDQ and TEM need from a judge."""

    name: str

    def extract_events(self, caption: str) -> list[str]: ...

    def classify(self, events: list[str], caption: str) -> list[Relation]: ...

    def align(self, events_a: list[str], events_b: list[str]) -> list[int | None]: ...


def _numbered(items: list[str]) -> str:
    return "\n".join(f"{i}. {t}" for i, t in enumerate(items, 1))


# --------------------------------------------------------------------------- LLM judge


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


# --------------------------------------------------------------------------- offline judge


@functools.cache
def _rules() -> dict:
    return prompts.load_yaml("judge_offline_rules")


def _phrase_re(phrases: list[str]) -> str:
    alts = sorted((re.escape(p) for p in phrases), key=len, reverse=True)
    return r"\b(?:" + "|".join(alts) + r")\b"


_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?|n't")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("n't", " n't"))


def _people() -> set[str]:
    return set().union(*_rules()["person_nouns"].values())


@functools.cache
def _marker_kinds() -> tuple[str, dict[str, str]]:
    """One regex over every temporal marker and connective, and the kind each phrase is."""
    rules = _rules()
    kinds = {ph: kind for kind, phrases in rules["temporal_markers"].items() for ph in phrases}
    kinds |= {ph: ("later" if kind == "sequence" else "same")
              for kind, phrases in rules["conjunctions"].items() for ph in phrases}
    return _phrase_re(list(kinds)), kinds


def _moment(kind: str, before: frozenset[int]) -> frozenset[int]:
    """The parts of the video (0 start, 1 middle, 2 end) a clause opened by `kind` is about."""
    fixed = {"start": {0}, "middle": {1}, "end": {2}, "throughout": set(facial.PHASES)}
    if kind in fixed:
        return frozenset(fixed[kind])
    if kind == "later":  # strictly after the moment before it; the end stays the end
        return frozenset(p for p in facial.PHASES if p > min(before)) or frozenset({2})
    if kind == "sentence":  # a new sentence with no marker: not before the last moment named
        return frozenset(p for p in facial.PHASES if p >= min(before))
    return before  # "same", "while", "and": the moment of the clause before


def phase_name(when: frozenset[int]) -> str | None:
    """How an event names its part of the video (None when it may be any part)."""
    names = _rules()["phase_names"]
    return {frozenset({0}): names["start"], frozenset({1}): names["middle"], frozenset({2}): names["end"],
            frozenset({1, 2}): names["later"]}.get(frozenset(when))


def split_timed(caption: str) -> list[tuple[str, frozenset[int]]]:
    """Split a caption into clauses in text order, each with the parts of the video it is about.

    Sentences are split at . ! ? ;, then at temporal markers ("as the video
    progresses", "then"), connectives ("while", "but") and at "and" when a new
    subject follows. Markers are dropped but set the moment of the clauses after
    them (see prompts/judge_offline_rules.yaml); subject pronouns are replaced by
    the last person named, and subject-less clauses get that person prepended, so
    each clause reads as a sentence of its own.
    """
    rules = _rules()
    text = re.sub(r"\s+", " ", caption.lower().replace('"', "'")).strip()
    markers, kinds = _marker_kinds()
    openers = "|".join(rules["clause_openers"])
    nouns = _people() | set(rules["static_words"]).union(*rules["regions"].values())
    pieces: list[tuple[str, str]] = []  # (text, what opened it)
    for sent in re.split(r"(?<=[.!?;:])\s+|;\s*", text):
        # "she laughs at the end": a marker that closes a sentence is about that sentence
        tail = re.search(r",?\s*(" + markers + r")[\s.!?]*$", sent)
        if tail and tail.start() > 0:
            sent = f"{tail.group(1)}, {sent[: tail.start()]}"
        sent = re.sub(r",?\s*" + markers, lambda m: f"|@{kinds[m.group(0).strip(' ,')]}@", sent)
        sent = re.sub(rf"(?:,\s*and\s+|\s+and\s+(?=(?:{openers})\b))", "|", sent)
        # "smiles and nods": "and" before a verb (a word in -s/-ed that names no body part)
        sent = re.sub(r"\s+and\s+(?=([a-z]+(?:s|ed))\b)",
                      lambda m: m.group(0) if m.group(1) in nouns else "|", sent)
        # ", shaking his head" / ", revealing ..." : a participle phrase is its own movement
        sent = re.sub(r",\s+(?=[a-z]+ing\b)", "|", sent)
        opened = "sentence"
        for piece in sent.split("|"):
            m = re.match(r"@(\w+)@", piece)
            if m:
                opened, piece = m.group(1), piece[m.end():]
            pieces.append((piece, opened))
            opened = "and"
    subject = None
    people = _people()
    pronouns = set(rules["subject_pronouns"])
    out: list[tuple[str, frozenset[int]]] = []
    when = facial.ALL
    pending = None  # a marker that opened an empty piece ("At the start, ...") sets the next clause
    for p, opened in pieces:
        if opened != "and" or pending is None:
            pending = opened if opened != "and" else pending
        p = re.sub(r"^[\s,.!?;:\-]+|[\s,.!?;:\-]+$", "", p)
        p = re.sub(r"^(?:and|so|also|with)\s+", "", p).strip(" ,")
        w = p.split()
        if not w:
            continue
        when = _moment(pending or "and", when)
        pending = None
        head = [x.removesuffix("'s") for x in w[:3]]
        if len(w) >= 2 and w[0] in ("the", "a", "an") and (head[1] in people or (len(w) > 2 and head[2] in people)):
            subject = " ".join(head[: 2 if head[1] in people else 3])
        elif w[0] in pronouns and subject:
            p = subject + p[len(w[0]) :]
        elif subject and re.match(r"^[a-z]+(?:s|ed|ing)$", w[0]) and w[0] not in ("this", "his", "its"):
            p = f"{subject} {p}"
        out.append((p, when))
    return out


def split_clauses(caption: str) -> list[str]:
    """The clauses of `split_timed`, without their moments."""
    return [c for c, _ in split_timed(caption)]


class OfflineJudge:
    """A judge that needs no server: a facial-expression lexicon, explicit rules, MiniLM for the rest.

    Each clause is read into an `evals.facial.Reading` (who, when, AUs, emotion
    labels and valence, negation, intensity). An event and a clause about one
    person at one moment contradict when `facial.conflict` says so (or, for what
    the lexicon does not cover, an opposite-direction or negation rule of
    prompts/judge_offline_rules.yaml fires); they entail when nothing blocks it and
    either the cosine similarity (all-MiniLM-L6-v2, mean-pooled, normalised) is at
    least `entail_threshold`, or the lexicon says the clause shows what the event
    says and the similarity is at least `lexicon_threshold`. `topic_threshold` is
    the similarity below which a clause is about something else and no rule fires.
    The thresholds were chosen on the development labels
    (tests/data/evals_relations_dev*.json), never on the held-out ones.
    """

    name = "offline-lexicon-minilm"

    def __init__(
        self,
        model_dir: str | Path | None = None,
        entail_threshold: float = 0.5,
        topic_threshold: float = 0.2,
        lexicon_threshold: float = 0.1,
        min_words: int = 3,
        batch_size: int = 64,
    ):
        self.model_dir = Path(model_dir) if model_dir else None
        self.entail_threshold = entail_threshold
        self.topic_threshold = topic_threshold
        self.lexicon_threshold = lexicon_threshold
        self.min_words = min_words
        self.batch_size = batch_size
        self._model = None
        self._tok = None
        self._vecs: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        r = _rules()
        from agent.faithfulness import lexicon

        # single-word negators of the shared lexicon ("not", "stops", "fades" ...)
        self._neg = {w for w in lexicon()[2] + lexicon()[3] if " " not in w}
        self._regions = {name: set(ws) for name, ws in r["regions"].items()}
        self._dirs = [(set(d["a"]), set(d["b"])) for d in r["directions"]]
        self._manners = [(set(d["a"]), set(d["b"])) for d in r["manners"]]
        self._static = set(r["static_words"])
        self._face = set().union(*self._regions.values())

    # -- embeddings
    def _load(self) -> None:
        if self._model is not None:
            return
        from tools import assets, torchvision_compat

        # transformers' model registry imports its vision code, which imports torchvision
        torchvision_compat.ensure()
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = self.model_dir or assets.path("minilm")
        self._tok = AutoTokenizer.from_pretrained(str(path))
        self._model = AutoModel.from_pretrained(str(path)).eval()
        self._torch = torch

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length sentence embeddings (mean pooling over tokens, as sentence-transformers does)."""
        with self._lock:
            todo = list(dict.fromkeys(t for t in texts if t not in self._vecs))
            if todo:
                self._load()
                torch = self._torch
                for i in range(0, len(todo), self.batch_size):
                    chunk = todo[i : i + self.batch_size]
                    enc = self._tok(chunk, padding=True, truncation=True, max_length=128, return_tensors="pt")
                    with torch.inference_mode():
                        hidden = self._model(**enc).last_hidden_state
                    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                    pooled = torch.nn.functional.normalize(pooled, dim=-1).numpy()
                    for t, v in zip(chunk, pooled, strict=True):
                        self._vecs[t] = v
            if not texts:
                return np.zeros((0, 384), np.float32)
            return np.stack([self._vecs[t] for t in texts])

    # -- structure
    def _is_event(self, clause: str, reading: facial.Reading) -> bool:
        """An action or change: three words or more, or two naming a facial action or emotion ("she frowns")."""
        w = set(_words(clause))
        if reading.facial and len(clause.split()) >= 2:
            return True
        if len(clause.split()) < self.min_words:
            return False
        return not (w & self._static and not w & self._face)

    def _timed_clauses(self, caption: str) -> list[tuple[str, facial.Reading]]:
        out = []
        for text, when in split_timed(caption):
            reading = facial.read(text, when)
            if self._is_event(text, reading):
                out.append((text, reading))
        return out

    def clauses(self, caption: str) -> list[str]:
        return [c for c, _ in self._timed_clauses(caption)]

    def extract_events(self, caption: str) -> list[str]:
        """Event clauses, each led by the part of the video it is about when the caption says."""
        events = []
        for text, reading in self._timed_clauses(caption):
            name = phase_name(reading.when)
            events.append(f"{name}, {text}" if name else text)
        events = list(dict.fromkeys(events))
        if len(events) > MAX_EVENTS:
            # keep the time span covered: evenly spaced clauses, first and last included
            keep = np.unique(np.linspace(0, len(events) - 1, MAX_EVENTS).round().astype(int))
            events = [events[i] for i in keep]
        return events

    # -- rules
    def _strip_neg(self, text: str) -> str:
        return " ".join(w for w in _words(text) if w not in self._neg)

    def contradiction_rule(self, a: str, b: str, negation: bool = True) -> str | None:
        """A rule outside the lexicon that says `a` and `b` cannot both hold, or None.

        Opposite manners (fast / slow), opposite directions of one region for the
        movements no AU names ("looks up" / "looks down"), and a negation the
        lexicon does not cover ("does not nod" / "nods"; off with `negation=False`).
        """
        wa, wb = set(_words(a)), set(_words(b))
        na, nb = bool(wa & self._neg), bool(wb & self._neg)
        if not na and not nb:
            for fast, slow in self._manners:
                if (wa & fast and wb & slow) or (wa & slow and wb & fast):
                    return "opposite manner"
            for region, words in self._regions.items():
                if wa & words and wb & words:
                    for up, down in self._dirs:
                        if (wa & up and wb & down and not wa & down and not wb & up) or (
                            wa & down and wb & up and not wa & up and not wb & down
                        ):
                            return f"opposite {region} movement"
        if negation and na != nb:
            sa, sb = self.embed([self._strip_neg(a), self._strip_neg(b)])
            if float(sa @ sb) >= self.entail_threshold:
                return "negation"
        return None

    def _relate(self, event: str, ev: facial.Reading, sims: np.ndarray,
                others: list[tuple[str, facial.Reading]]) -> tuple[Label, int, str]:
        """(label, index of the deciding clause, reason) for one clause-sized event."""
        contra = None
        for j in np.argsort(-sims):
            s = float(sims[j])
            text, cl = others[j]
            if s < min(self.topic_threshold, self.lexicon_threshold):
                break
            if not facial.same_scene(ev, cl):
                continue
            rule = facial.conflict(ev, cl) if s >= self.lexicon_threshold else None
            if rule is None and s >= self.topic_threshold:
                # a negation the lexicon already read ("stops laughing") is not read again
                negated = ev.not_aus or ev.not_labels or cl.not_aus or cl.not_labels
                rule = self.contradiction_rule(event, text, negation=not negated)
            if rule is not None:
                contra = contra or (int(j), rule)
                continue
            if facial.blocks(ev, cl):
                continue
            if s >= self.entail_threshold:
                return "entailment", int(j), "similar clause"
            if s >= self.lexicon_threshold and facial.entails_by_lexicon(ev, cl):
                return "entailment", int(j), "same facial action or emotion"
        # an entailing clause (another moment of the video) wins over a contradicting one
        if contra is not None:
            return "contradiction", contra[0], contra[1]
        return "neutral", int(np.argmax(sims)), "no close clause"

    def _judge(self, events: list[str], others: list[tuple[str, facial.Reading]]) -> list[tuple[Relation, int]]:
        """Each event against clause-sized `others`, with the index of the deciding one.

        An event of several clauses ("X and then Y") is entailed when every part is, in
        that order, and contradicted when any part is.
        """
        parts = [[(t, facial.read(t, w)) for t, w in split_timed(e)] or [(e, facial.read(e))] for e in events]
        flat = [t for p in parts for t, _ in p]
        texts = [t for t, _ in others]
        self.embed(flat + texts + [self._strip_neg(t) for t in flat + texts])
        sims = self.embed(flat) @ self.embed(texts).T
        out, k = [], 0
        for e, p in zip(events, parts, strict=True):
            rels = [self._relate(text, reading, sims[k + i], others) for i, (text, reading) in enumerate(p)]
            labels = [r[0] for r in rels]
            if "contradiction" in labels:
                i = labels.index("contradiction")
            elif all(x == "entailment" for x in labels):
                i = len(rels) - 1
            else:
                i = next(n for n, x in enumerate(labels) if x != "entailment")
            lab, j, why = rels[i]
            order = [r[1] for r in rels]
            if lab == "entailment" and order != sorted(order) and any(w.when != facial.ALL for _, w in p[1:]):
                lab, why = "contradiction", "the same events in the other order"
            out.append((Relation(e, lab, texts[j], round(float(sims[k + i, j]), 4), why), j))
            k += len(p)
        return out

    # -- the judge interface
    def classify(self, events: list[str], caption: str) -> list[Relation]:
        if not events:
            return []
        clauses = [(t, facial.read(t, w)) for t, w in split_timed(caption)]
        clauses = [(t, r) for t, r in clauses if len(t.split()) >= 2]
        if not clauses:
            return [Relation(e, "neutral", reason="nothing to compare with") for e in events]
        return [rel for rel, _ in self._judge(events, clauses)]

    def align(self, events_a: list[str], events_b: list[str]) -> list[int | None]:
        if not events_a or not events_b:
            return [None] * len(events_a)
        # an extracted event is one clause, led by its moment: read it back the same way
        others, owner = [], []
        for j, e in enumerate(events_b):
            for t, w in split_timed(e) or [(e, facial.ALL)]:
                others.append((t, facial.read(t, w)))
                owner.append(j)
        out: list[int | None] = []
        for rel, j in self._judge(events_a, others):
            out.append(owner[j] if rel.label == "entailment" else None)
        return out


def make_judge(
    kind: str,
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    cache_path: str | Path | None = None,
    **kwargs,
) -> Judge:
    """Build a judge by name: "offline" or "llm" (which needs base_url and model)."""
    if kind == "offline":
        return OfflineJudge(**kwargs)
    if kind == "llm":
        if not base_url or not model:
            raise JudgeError("The llm judge needs --base-url (e.g. http://127.0.0.1:8000/v1) and --model.")
        return LLMJudge(base_url, model, api_key=api_key, cache_path=cache_path, **kwargs)
    raise JudgeError(f"Unknown judge '{kind}': use offline or llm.")
