"""The offline caption judge: no server. Clause splitting on temporal markers and
conjunctions (each clause keeps its part of the video), a facial-expression lexicon
(evals/facial.py: AUs, emotions, valence, negation) for contradictions and
paraphrases, and MiniLM sentence embeddings for what the lexicon does not cover;
word lists in prompts/judge_offline_rules.yaml, prompts/facial_actions.yaml and
prompts/emotion_lexicon.yaml. The judge interface is in evals/judges.py.
"""

from __future__ import annotations

import functools
import re
import threading
from pathlib import Path

import numpy as np

import prompts
from evals import facial
from evals.judges import MAX_EVENTS, Label, Relation


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
