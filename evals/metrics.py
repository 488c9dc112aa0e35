"""Caption metrics as pure functions: AutoDQ, TEM, ROUGE-L and CIDEr.

Every function takes plain strings (and a judge, see evals/judges.py) and
returns the score together with its evidence.

AutoDQ follows Tarsier's DREAM-1K evaluation (Wang et al. 2024,
arXiv:2407.00634, and its `evaluate_dream_gpt.py`): captions are lower-cased
and double quotes replaced by single ones; the judge extracts at most 10 events
per caption; the reference events are classified against the prediction and
the predicted events against the reference; only "entailment" counts.
recall = entailed reference events / reference events, precision = entailed
predicted events / predicted events; a caption with no events scores 1.0 on
its side, as in Tarsier; F1 is their harmonic mean. Over a data set, Tarsier
reports the harmonic mean of the mean recall and the mean precision
(`aggregate_f1`).

TEM is our reading of FEC-Bench's temporal metric, whose exact formula is not
public (see docs/evals.md): events of both captions in time order, a match
between a reference and a predicted event when the judge says one entails the
other (asked both ways), the longest common subsequence (LCS) of matched events
in time order, recall = |LCS| / reference events, precision = |LCS| /
predicted events, TEM = F1.

ROUGE-L and CIDEr(-D) use pycocoevalcap, the COCO caption evaluation code
(Lin 2004; Vedantam et al. 2015), on text tokenised like its PTBTokenizer but
in pure Python (`tokenize`), so no Java is needed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from evals.judges import Judge, Relation


def f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall <= 0 else 2 * precision * recall / (precision + recall)


def aggregate_f1(precisions: list[float], recalls: list[float]) -> float:
    """Data-set score as Tarsier reports it: harmonic mean of mean recall and mean precision."""
    if not precisions:
        return 0.0
    return f1(sum(precisions) / len(precisions), sum(recalls) / len(recalls))


def normalise_caption(text: str) -> str:
    """What Tarsier's evaluation does to a caption before the judge sees it."""
    return re.sub(r"\s+", " ", (text or "").lower().replace('"', "'")).strip()


# --------------------------------------------------------------------------- AutoDQ


def extract_events(caption: str, judge: Judge) -> list[str]:
    """At most 10 atomic events of a caption, in time order."""
    return judge.extract_events(normalise_caption(caption))


def classify(event: str, caption: str, judge: Judge) -> Relation:
    """entailment / neutral / contradiction of one event against a caption."""
    return judge.classify([event], normalise_caption(caption))[0]


@dataclass
class AutoDQResult:
    score: float
    precision: float
    recall: float
    pred_events: list[str]
    ref_events: list[str]
    precision_relations: list[Relation] = field(default_factory=list)  # predicted events vs reference
    recall_relations: list[Relation] = field(default_factory=list)  # reference events vs prediction

    def to_dict(self) -> dict:
        return asdict(self)


def _entailed_share(relations: list[Relation]) -> float:
    if not relations:
        return 1.0  # Tarsier: a caption without events scores 1.0 on its side
    return sum(r.label == "entailment" for r in relations) / len(relations)


def autodq(
    pred: str,
    ref: str,
    judge: Judge,
    pred_events: list[str] | None = None,
    ref_events: list[str] | None = None,
) -> AutoDQResult:
    """AutoDQ of a predicted caption against a reference (events may be passed in, e.g. cached)."""
    pred_n, ref_n = normalise_caption(pred), normalise_caption(ref)
    pe = judge.extract_events(pred_n) if pred_events is None else pred_events
    re_ = judge.extract_events(ref_n) if ref_events is None else ref_events
    rec_rel = judge.classify(re_, pred_n)
    prec_rel = judge.classify(pe, ref_n)
    p, r = _entailed_share(prec_rel), _entailed_share(rec_rel)
    return AutoDQResult(f1(p, r), p, r, pe, re_, prec_rel, rec_rel)


# --------------------------------------------------------------------------- TEM


def lcs_pairs(n: int, m: int, matches: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """Longest common subsequence of two sequences of lengths n, m where (i, j) in `matches`
    means element i of the first equals element j of the second; returns the pairs, in order."""
    dp = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            if (i, j) in matches:
                dp[i][j] = dp[i + 1][j + 1] + 1
            else:
                dp[i][j] = max(dp[i + 1][j], dp[i][j + 1])
    out, i, j = [], 0, 0
    while i < n and j < m:
        if (i, j) in matches and dp[i][j] == dp[i + 1][j + 1] + 1:
            out.append((i, j))
            i, j = i + 1, j + 1
        elif dp[i + 1][j] >= dp[i][j + 1]:
            i += 1
        else:
            j += 1
    return out


@dataclass
class TEMResult:
    score: float
    precision: float
    recall: float
    pred_events: list[str]
    ref_events: list[str]
    matches: list[tuple[int, int]]  # (reference index, predicted index) judged the same event
    lcs: list[tuple[int, int]]  # the matches kept in time order

    def to_dict(self) -> dict:
        return asdict(self)


def tem(
    pred: str,
    ref: str,
    judge: Judge,
    pred_events: list[str] | None = None,
    ref_events: list[str] | None = None,
) -> TEMResult:
    """Temporal event matching: F1 of the time-ordered LCS of matched events."""
    pe = judge.extract_events(normalise_caption(pred)) if pred_events is None else pred_events
    re_ = judge.extract_events(normalise_caption(ref)) if ref_events is None else ref_events
    if not pe or not re_:
        same = not pe and not re_
        return TEMResult(float(same), float(same), float(same), pe, re_, [], [])
    matches = {(i, j) for i, j in enumerate(judge.align(re_, pe)) if j is not None}
    matches |= {(i, j) for j, i in enumerate(judge.align(pe, re_)) if i is not None}
    lcs = lcs_pairs(len(re_), len(pe), matches)
    p, r = len(lcs) / len(pe), len(lcs) / len(re_)
    return TEMResult(f1(p, r), p, r, pe, re_, sorted(matches), lcs)


# --------------------------------------------------------------------------- ROUGE-L, CIDEr


def tokenize(text: str) -> str:
    """Lower-cased Penn-Treebank tokens without punctuation, as pycocoevalcap's PTBTokenizer
    (Stanford CoreNLP, Java) produces them; checked against its output in the tests."""
    from nltk.tokenize import TreebankWordTokenizer
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS

    tb = TreebankWordTokenizer()
    text = (text or "").replace("\n", " ").strip()
    # an opening single quote is a quotation mark (PTB: `), which is dropped as punctuation
    text = re.sub(r"(^|[\s(\[{])'(?=[A-Za-z])", r"\1", text)
    sentences = re.split(r"(?<=[.!?])\s+", text)
    toks = [t.lower() for s in sentences if s for t in tb.tokenize(s, convert_parentheses=True)]
    return " ".join(t for t in toks if t not in PUNCTUATIONS)


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F-score (beta 1.2, the COCO caption variant) of one prediction against one reference."""
    from pycocoevalcap.rouge.rouge import Rouge

    return float(Rouge().calc_score([tokenize(pred)], [tokenize(ref)]))


def cider(preds: Mapping[str, str], refs: Mapping[str, str | list[str]]) -> tuple[float, dict[str, float]]:
    """CIDEr-D over a corpus: (corpus score, per-item scores).

    CIDEr weighs n-grams by their inverse document frequency over all the
    references, so it is only defined for a set of items, not for one pair.
    """
    from pycocoevalcap.cider.cider import Cider

    ids = [k for k in refs if k in preds]
    if not ids:
        return 0.0, {}
    gts = {k: [tokenize(r) for r in ([refs[k]] if isinstance(refs[k], str) else refs[k])] for k in ids}
    res = {k: [tokenize(preds[k])] for k in ids}
    score, scores = Cider().compute_score(gts, res)
    return float(score), {k: float(s) for k, s in zip(ids, scores, strict=True)}
