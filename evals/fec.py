"""FEC-Bench-style caption evaluation: read the files, score every item, write the report.

References are FEC-Bench's `test.json` (a list of `{"id", "video", "caption"}`);
predictions are a jsonl (or json list) of `{"id", "caption"}`. `run_fec`
scores each item with AutoDQ, TEM and ROUGE-L (judge requests in parallel,
with a bound), then CIDEr over the whole set, and with `out_dir` writes:

- `items.jsonl`: one line per scored item as soon as it is done, so an
  interrupted run resumes where it stopped (items whose captions and judge are
  unchanged are not scored again);
- `results.json`: the aggregate table and an `items` list, each with `id`,
  `autodq`, `tem`, `rouge_l`, `cider` and the evidence (events, relations, LCS);
- `report.md` and `scores.png`: the table, the worst items, the distributions.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from evals.judges import Judge
from evals.metrics import aggregate_f1, autodq, cider, extract_events, rouge_l, tem
from tools.errors import FaceReasonError
from tools.files import jsonl_rows, write_atomic


def _read_json_or_jsonl(path: Path) -> list:
    if not path.is_file():
        raise FaceReasonError(f"{path} does not exist or is not a file.")
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        return []
    if text[0] == "[":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FaceReasonError(f"{path} is not valid JSON: {exc}.") from None
        return data
    return jsonl_rows(text, str(path))


def load_references(path: str | Path) -> list[dict]:
    """FEC-Bench test.json: a list of {"id", "video", "caption"} (video optional here)."""
    path = Path(path)
    rows = _read_json_or_jsonl(path)
    if isinstance(rows, dict):
        rows = [rows]
    out, seen = [], set()
    for k, r in enumerate(rows):
        if not isinstance(r, dict) or "id" not in r or not isinstance(r.get("caption"), str):
            raise FaceReasonError(
                f"{path}: item {k} is not an FEC reference; each item needs \"id\" and a \"caption\" string."
            )
        key = str(r["id"])
        if key in seen:
            raise FaceReasonError(f"{path}: the id {key!r} appears twice.")
        seen.add(key)
        out.append({"id": key, "video": r.get("video"), "caption": r["caption"]})
    if not out:
        raise FaceReasonError(f"{path} holds no references.")
    return out


def load_predictions(path: str | Path) -> dict[str, str]:
    """Predictions: jsonl (or a json list) of {"id", "caption"}; returns id -> caption."""
    path = Path(path)
    out: dict[str, str] = {}
    for k, r in enumerate(_read_json_or_jsonl(path)):
        if not isinstance(r, dict) or "id" not in r or not isinstance(r.get("caption", ""), str):
            raise FaceReasonError(f"{path}: item {k} needs \"id\" and a \"caption\" string.")
        out[str(r["id"])] = r.get("caption") or ""
    return out


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def score_item(item_id: str, pred: str, ref: str, judge: Judge) -> dict:
    """Every per-item score with its evidence (CIDEr is added later: it needs the whole set).

    An empty caption against a non-empty reference scores 0 on every metric. By the
    metrics' own rule (a side without events scores 1.0), a missing caption scored 1.0
    wherever the judge found no event in the reference ("Someone frowns.")."""
    pe, re_ = extract_events(pred, judge), extract_events(ref, judge)
    a = autodq(pred, ref, judge, pred_events=pe, ref_events=re_)
    t = tem(pred, ref, judge, pred_events=pe, ref_events=re_)
    scores = {"autodq": a.score, "autodq_precision": a.precision, "autodq_recall": a.recall,
              "tem": t.score, "tem_precision": t.precision, "tem_recall": t.recall}
    if not pred.strip() and ref.strip():
        scores = dict.fromkeys(scores, 0.0)
    return {
        "id": item_id,
        **scores,
        "rouge_l": rouge_l(pred, ref),
        "cider": None,
        "judge": judge.name,
        "pred_sha": _sha(pred),
        "ref_sha": _sha(ref),
        "evidence": {
            "pred_events": pe,
            "ref_events": re_,
            "precision_relations": [r.to_dict() for r in a.precision_relations],
            "recall_relations": [r.to_dict() for r in a.recall_relations],
            "tem_matches": [list(m) for m in t.matches],
            "tem_lcs": [list(m) for m in t.lcs],
        },
    }


def _load_done(path: Path) -> dict[str, dict]:
    done: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                done[row["id"]] = row
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut by an interrupted write: that item is scored again
    return done


def aggregate(items: list[dict], cider_corpus: float | None = None) -> dict:
    """The table: AutoDQ and TEM as Tarsier aggregates (harmonic mean of mean P and mean R)."""
    n = len(items)

    def mean(key: str) -> float:
        return sum(i[key] for i in items) / n if n else 0.0

    return {
        "n": n,
        "autodq": aggregate_f1([i["autodq_precision"] for i in items], [i["autodq_recall"] for i in items]),
        "autodq_precision": mean("autodq_precision"),
        "autodq_recall": mean("autodq_recall"),
        "autodq_item_mean": mean("autodq"),
        "tem": aggregate_f1([i["tem_precision"] for i in items], [i["tem_recall"] for i in items]),
        "tem_precision": mean("tem_precision"),
        "tem_recall": mean("tem_recall"),
        "tem_item_mean": mean("tem"),
        "rouge_l": mean("rouge_l"),
        "cider": cider_corpus if cider_corpus is not None else 0.0,
    }


def run_fec(
    predictions: dict[str, str],
    references: list[dict],
    judge: Judge,
    out_dir: str | Path | None = None,
    workers: int = 4,
    progress: bool = True,
    on_item: Callable[[dict], None] | None = None,
) -> dict:
    """Score predictions against FEC references; returns {"summary", "items", "missing"}.

    A reference without a prediction is scored as an empty caption (it scores
    0) and listed under "missing", so a model cannot gain by skipping items.
    """
    from tqdm import tqdm

    if workers < 1:
        raise FaceReasonError("--workers must be at least 1.")
    unknown = sorted(set(predictions) - {r["id"] for r in references})
    missing = [r["id"] for r in references if r["id"] not in predictions]
    out = Path(out_dir) if out_dir else None
    done: dict[str, dict] = {}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        done = _load_done(out / "items.jsonl")
    todo, items = [], {}
    for r in references:
        pred = predictions.get(r["id"], "")
        prev = done.get(r["id"])
        if prev and prev.get("judge") == judge.name and prev.get("pred_sha") == _sha(pred) \
                and prev.get("ref_sha") == _sha(r["caption"]):
            items[r["id"]] = prev
        else:
            todo.append((r["id"], pred, r["caption"]))
    sink = open(out / "items.jsonl", "a", encoding="utf-8") if out is not None else None  # noqa: SIM115
    try:
        bar = tqdm(total=len(references), initial=len(items), desc="fec", unit="item",
                   disable=not progress)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(score_item, i, p, c, judge): i for i, p, c in todo}
            for fut in as_completed(futures):
                row = fut.result()
                items[row["id"]] = row
                if sink is not None:
                    sink.write(json.dumps(row) + "\n")
                    sink.flush()
                if on_item is not None:
                    on_item(row)
                bar.update(1)
        bar.close()
    finally:
        if sink is not None:
            sink.close()
    ordered = [items[r["id"]] for r in references]
    corpus, per_item = cider({r["id"]: predictions.get(r["id"], "") for r in references},
                             {r["id"]: r["caption"] for r in references})
    for row in ordered:
        row["cider"] = per_item.get(row["id"], 0.0)
    summary = aggregate(ordered, corpus)
    summary.update(judge=judge.name, missing=len(missing), unknown_predictions=len(unknown))
    result = {"summary": summary, "items": ordered, "missing": missing, "unknown": unknown}
    if out is not None:
        (out / "results.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
        write_report(result, out)
    return result


TABLE_ROWS = 1000  # items listed one per row in report.md; items.jsonl always has them all


def write_report(result: dict, out_dir: str | Path, worst: int = 5) -> Path:
    """report.md with the aggregate table, a row per item, the worst items by AutoDQ with
    their judged events, and scores.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    s, items = result["summary"], result["items"]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    for ax, key in zip(axes, ("autodq", "tem", "rouge_l"), strict=True):
        ax.hist([i[key] for i in items], bins=20, range=(0, 1), color="#4c72b0")
        ax.set_title(key)
        ax.set_xlabel("score")
    axes[0].set_ylabel("items")
    fig.tight_layout()
    fig.savefig(out / "scores.png", dpi=100)
    plt.close(fig)
    lines = [
        "# FEC caption evaluation", "",
        f"Judge: `{s['judge']}`; items: {s['n']} (missing predictions scored as empty: {s['missing']}).", "",
        "| metric | score | precision | recall |", "|---|---|---|---|",
        f"| AutoDQ | {s['autodq']:.3f} | {s['autodq_precision']:.3f} | {s['autodq_recall']:.3f} |",
        f"| TEM | {s['tem']:.3f} | {s['tem_precision']:.3f} | {s['tem_recall']:.3f} |",
        f"| ROUGE-L | {s['rouge_l']:.3f} | | |",
        f"| CIDEr | {s['cider']:.3f} | | |", "",
        "AutoDQ and TEM: harmonic mean of the mean precision and the mean recall (Tarsier's "
        "aggregation); per-item means: "
        f"AutoDQ {s['autodq_item_mean']:.3f}, TEM {s['tem_item_mean']:.3f}. See docs/evals.md.", "",
        "![score distributions](scores.png)", "",
        "## Every item", "",
        "| id | AutoDQ | TEM | ROUGE-L | CIDEr |", "|---|---|---|---|---|",
    ]
    lines += [f"| {r['id']} | {r['autodq']:.3f} | {r['tem']:.3f} | {r['rouge_l']:.3f} | {r['cider']:.3f} |"
              for r in items[:TABLE_ROWS]]
    if len(items) > TABLE_ROWS:
        lines.append(f"\n({len(items) - TABLE_ROWS} more in items.jsonl.)")
    lines += ["", f"## The {min(worst, len(items))} lowest AutoDQ items", ""]
    for row in sorted(items, key=lambda r: (r["autodq"], r["tem"]))[:worst]:
        ev = row["evidence"]
        lines += [f"### {row['id']}: AutoDQ {row['autodq']:.3f}, TEM {row['tem']:.3f}, "
                  f"ROUGE-L {row['rouge_l']:.3f}", ""]
        lines += ["Reference events (against the prediction):", ""]
        lines += [f"- {r['event']} — {r['label']}" for r in ev["recall_relations"]] or ["- (none)"]
        lines += ["", "Predicted events (against the reference):", ""]
        lines += [f"- {r['event']} — {r['label']}" for r in ev["precision_relations"]] or ["- (none)"]
        lines.append("")
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def generate_predictions(references: list[dict], videos: str | Path, model: str | None,
                         out_path: str | Path, progress: bool = True, workers: int | None = None,
                         address: str | None = None) -> tuple[dict[str, str], list[dict]]:
    """Caption each reference's video with our agent, through `facereason batch` (Ray actors,
    results kept beside `out_path` in captions/, so a rerun explains only what is new).

    Returns (captions by item id, problems): a video that is not in the folder or cannot be
    read is a problem row {id, video, code, message} and gets no caption (run_fec then
    scores it as missing), never a crash. The captions are also written to `out_path`."""
    from agent.batch import Settings, run_batch

    videos, out_path = Path(videos), Path(out_path)
    if not videos.is_dir():
        raise FaceReasonError(f"--videos {videos} is not a folder.")
    wanted: dict[str, Path] = {}
    problems: list[dict] = []
    for r in references:
        name = str(r.get("video") or r["id"])
        path = next((p for p in (videos / name, videos / Path(name).name) if p.is_file()), None)
        if path is None:
            problems.append({"id": r["id"], "video": name, "code": "not_found",
                             "message": f"{name} is not in {videos}."})
        else:
            wanted[r["id"]] = Path(os.path.normpath(path))
    captions_dir = out_path.parent / "captions"
    rows = {}
    if wanted:
        summary = run_batch(sorted({str(p) for p in wanted.values()}), captions_dir,
                            Settings(explain=True, model=model), workers=workers, address=address,
                            progress=progress)
        rows = {row["path"]: row for row in summary.rows}
    preds: dict[str, str] = {}
    for item_id, path in wanted.items():
        row = rows.get(str(path), {"status": "error", "code": "internal_error",
                                   "message": "the batch returned no row for it"})
        if row["status"] != "ok":
            problems.append({"id": item_id, "video": path.name, "code": row["code"],
                             "message": row["message"]})
            continue
        result = json.loads((captions_dir / row["result"]).read_text(encoding="utf-8"))
        explanations = result.get("explanations") or []
        preds[item_id] = explanations[0]["caption"] if explanations else ""
    write_atomic(out_path, "".join(json.dumps({"id": k, "caption": v}) + "\n" for k, v in preds.items()))
    return preds, problems
