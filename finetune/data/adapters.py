"""Readers for public labelled-face formats, so users can train on data they hold.

Each reader turns a file (or folder) into `Item`s: a media path plus whatever
labels the format has. `build_dataset` then runs every medium through the
perception tools once (features cached by the file's content hash, so a
second build or a second format over the same files costs nothing), and turns
each item into a training row with finetune/data/builder.py.

Formats:
- FEC-Bench / FacialDynamic `test.json`: a list of {id, video, caption}
  (Wang et al. 2025, FEC-Bench). The caption is the reference; its emotion
  sequence gives the segment order and its dominant emotion the label.
- FEA-20K jsonl: {id, dataset, image, question, AUs, labels, description}
  (Facial-R1's FEA-20K). AUs as "AU6"/6/"AU06"; labels a string or list.
- ExpLLM annotation json: a list of {file_name, emo, au, description}
  (Lan et al. 2024, ExpLLM). `au` as a list or "AU1, AU2" text.
- Image folders (root/<label>/*.jpg, RAF-DB/AffectNet style) and CSV files
  with `path,label` columns.
- Videos + CSV (DFEW style): a CSV with a video path column and a label
  column; numeric labels map through DFEW's 1-7 order unless a map is given.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from finetune.data.builder import TrainingDataError
from tools.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES

# DFEW's label order (Jiang et al. 2020): 1 happy ... 7 fear.
DFEW_LABELS = {1: "happiness", 2: "sadness", 3: "neutral", 4: "anger", 5: "surprise", 6: "disgust",
               7: "fear"}
_AU_RE = re.compile(r"\bAU\s?0?(\d{1,2})\b", re.I)


@dataclass
class Item:
    media: str
    id: str
    label: str | None = None
    aus: list[str] = field(default_factory=list)
    caption: str | None = None
    question: str | None = None
    description: str | None = None
    identity: str = ""
    source: str = ""


def normalise_label(label: object) -> str:
    from evals.classification import normalise_label as _norm

    return _norm(label)


def parse_aus(value: object) -> list[str]:
    """AU codes from a list, numbers or text ("AU6, AU12", [6, 12], "AU06+AU12")."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for x in items:
        if isinstance(x, (int, float)):
            out.append(f"AU{int(x):02d}")
            continue
        found = _AU_RE.findall(str(x))
        if not found and str(x).strip().isdigit():
            found = [str(x).strip()]
        out += [f"AU{int(n):02d}" for n in found]
    return sorted(set(out))


def _resolve(base: Path, p: str) -> Path:
    q = Path(p)
    return q if q.is_absolute() else base / q


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrainingDataError(f"{path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise TrainingDataError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _need(rec: dict, keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in rec]
    if missing:
        raise TrainingDataError(f"{where}: missing field(s) {', '.join(missing)}")


def read_fec_bench(path: str | Path, media_root: str | Path | None = None) -> list[Item]:
    """FEC-Bench / FacialDynamic test.json: [{id, video, caption}, ...]."""
    from finetune.rewards import caption_emotions

    p = Path(path)
    data = _read_json(p)
    if not isinstance(data, list):
        raise TrainingDataError(f"{p}: expected a JSON list of {{id, video, caption}} records")
    root = Path(media_root) if media_root else p.parent
    items = []
    for i, rec in enumerate(data):
        _need(rec, ("id", "video", "caption"), f"{p} record {i}")
        seq = caption_emotions(rec["caption"])
        counts = Counter(s for s in seq if s != "neutral")
        label = counts.most_common(1)[0][0] if counts else ("neutral" if seq else None)
        items.append(Item(media=str(_resolve(root, rec["video"])), id=str(rec["id"]), label=label,
                          caption=rec["caption"], identity=str(rec["id"]), source="fec-bench"))
    return items


def read_fea20k(path: str | Path, media_root: str | Path | None = None) -> list[Item]:
    """FEA-20K jsonl: one {id, dataset, image, question, AUs, labels, description} per line."""
    p = Path(path)
    if not p.is_file():
        raise TrainingDataError(f"{p} does not exist")
    root = Path(media_root) if media_root else p.parent
    items = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TrainingDataError(f"{p} line {n} is not valid JSON ({exc.msg})") from None
        _need(rec, ("id", "image", "labels"), f"{p} line {n}")
        labels = rec["labels"] if isinstance(rec["labels"], list) else [rec["labels"]]
        items.append(Item(media=str(_resolve(root, rec["image"])), id=str(rec["id"]),
                          label=normalise_label(labels[0]) if labels else None,
                          aus=parse_aus(rec.get("AUs")), question=rec.get("question"),
                          description=rec.get("description"), identity=str(rec["id"]),
                          source=f"fea-20k/{rec.get('dataset', '')}".rstrip("/")))
    return items


def read_expllm(path: str | Path, media_root: str | Path | None = None) -> list[Item]:
    """ExpLLM annotation json: [{file_name, emo, au, description}, ...]."""
    p = Path(path)
    data = _read_json(p)
    if isinstance(data, dict):  # some releases key the records by file name
        data = [{"file_name": k, **v} for k, v in data.items()]
    root = Path(media_root) if media_root else p.parent
    items = []
    for i, rec in enumerate(data):
        _need(rec, ("file_name", "emo"), f"{p} record {i}")
        items.append(Item(media=str(_resolve(root, rec["file_name"])), id=Path(rec["file_name"]).stem,
                          label=normalise_label(rec["emo"]), aus=parse_aus(rec.get("au")),
                          description=rec.get("description"), identity=Path(rec["file_name"]).stem,
                          source="expllm"))
    return items


def read_image_folder(root: str | Path) -> list[Item]:
    """root/<label>/<image>: the folder name is the label."""
    r = Path(root)
    if not r.is_dir():
        raise TrainingDataError(f"{r} is not a folder")
    items = [Item(media=str(f), id=f"{d.name}/{f.stem}", label=normalise_label(d.name),
                  identity=f.stem, source="image-folder")
             for d in sorted(r.iterdir()) if d.is_dir()
             for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not items:
        raise TrainingDataError(f"{r} has no <label>/<image> files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return items


def read_csv(path: str | Path, media_root: str | Path | None = None,
             label_map: dict | None = None) -> list[Item]:
    """CSV of media and labels: columns path (or video, file, image) and label (or emotion).

    Numeric labels go through `label_map` (default DFEW's 1-7 order); an optional
    `identity`/`subject` column keeps a person's clips on one side of the split.
    """
    p = Path(path)
    if not p.is_file():
        raise TrainingDataError(f"{p} does not exist")
    root = Path(media_root) if media_root else p.parent
    with p.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise TrainingDataError(f"{p} has no rows")
    cols = {c.lower().strip(): c for c in rows[0]}
    pcol = next((cols[c] for c in ("path", "video", "file", "image", "video_path", "file_name")
                 if c in cols), None)
    lcol = next((cols[c] for c in ("label", "emotion", "emo", "class") if c in cols), None)
    if pcol is None or lcol is None:
        raise TrainingDataError(f"{p}: needs a path column (path/video/file/image) and a label column "
                                f"(label/emotion); found {', '.join(rows[0])}")
    idcol = next((cols[c] for c in ("identity", "subject", "person") if c in cols), None)
    lm = {int(k): v for k, v in (label_map or DFEW_LABELS).items()}
    items = []
    for r in rows:
        raw = str(r[lcol]).strip()
        label = lm.get(int(raw)) if raw.isdigit() else normalise_label(raw)
        if raw.isdigit() and label is None:
            raise TrainingDataError(f"{p}: numeric label {raw} has no entry in the label map")
        media = _resolve(root, r[pcol])
        kind = "video-csv" if media.suffix.lower() in VIDEO_SUFFIXES else "image-csv"
        items.append(Item(media=str(media), id=media.stem, label=label,
                          identity=str(r[idcol]) if idcol else media.stem, source=kind))
    return items


READERS = {"fec-bench": read_fec_bench, "fea-20k": read_fea20k, "expllm": read_expllm,
           "image-folder": read_image_folder, "csv": read_csv}


def read(fmt: str, path: str | Path, **kwargs) -> list[Item]:
    if fmt not in READERS:
        raise TrainingDataError(f"unknown data format {fmt!r}; known: {', '.join(READERS)}")
    return READERS[fmt](path, **kwargs)


# ------------------------------------------------------------------ features
def content_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def analyze_cached(path: str | Path, cache_dir: str | Path, fps: float | None = 8.0):
    """The Analysis of a medium, computed once per content hash, fps and measurement code."""
    from tools import analyze
    from tools.analysis import Analysis

    p = Path(path)
    if not p.is_file():
        raise TrainingDataError(f"media file {p} does not exist")
    from tools import measurement_fingerprint

    cache = Path(cache_dir) / f"{content_hash(p)}_{fps or 'all'}_{measurement_fingerprint()}.json"
    if cache.is_file():
        return Analysis.from_json(cache.read_text())
    a = analyze(p, fps=fps, include_landmarks=False, display_name=p.name)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".partial")
    tmp.write_text(a.to_json())
    tmp.replace(cache)
    return a


def _main_track(analysis) -> int | None:
    if not analysis.tracks:
        return None
    return max(analysis.tracks, key=lambda t: (t.n, -t.track_id)).track_id


def _rows(batch: dict[str, list], cache_dir: str, fps: float | None, tool_share: float) -> dict:
    from finetune.data import builder
    from finetune.rewards import caption_emotions

    out: list[dict] = []
    for d in batch["item"]:
        item = Item(**json.loads(d))
        a = analyze_cached(item.media, cache_dir, fps)
        tid = _main_track(a)
        if tid is None or item.label is None:
            continue  # no face, or no label: nothing to learn from
        # A reference caption's emotion sequence is the true story the arc should follow.
        order = caption_emotions(item.caption) if item.caption else [item.label]
        seed = int(hashlib.sha256(item.id.encode()).hexdigest()[:6], 16)
        out += builder.records(a, tid, id=item.id, source=item.source, clip_id=item.id,
                               identity=item.identity or item.id, label=item.label, aus=item.aus,
                               segment_order=order or [item.label], seed=seed,
                               tool_share=tool_share, questions=0,
                               question=item.question)
    return {k: [r[k] for r in out] for k in builder.ROW_KEYS}


def build_dataset(items: list[Item], cache_dir: str | Path, *, fps: float | None = 8.0,
                  test_share: float = 0.15, tool_share: float = 0.15, num_proc: int | None = None):
    """Analyse every item's media (cached) and build a DatasetDict(train, test) split by identity."""
    from datasets import Dataset

    from finetune.data import builder

    if not items:
        raise TrainingDataError("no items to build a dataset from")
    src = Dataset.from_dict({"item": [json.dumps(asdict(i)) for i in items]})
    ds = src.map(_rows, batched=True, batch_size=4, remove_columns=["item"], num_proc=num_proc,
                 fn_kwargs={"cache_dir": str(cache_dir), "fps": fps, "tool_share": tool_share},
                 desc="analysing media")
    if len(ds) == 0:
        raise TrainingDataError("none of the items had a face and a label")
    return builder.split(ds, test_share, key="identity")
