"""`facereason batch`: a dataset through perception (and, with --explain, the reasoner) on Ray.

1. `collect`    the inputs: files, folders (searched recursively for `tools.video.MEDIA_SUFFIXES`)
                and manifests (CSV or JSONL with a `path` column; the other columns go to the index)
2. `plan`       each file's sha256 and the settings name its result, `<stem>.<sha12>.<settings8>.json`;
                a result already in DIR is not computed again
3. `_Worker`    one Ray actor per worker, holding its own models: the emotion CNN is the process-wide
                `tools.emotion_cnn.get_cnn()`, the reasoner the process-wide model cache behind
                `agent.backends.make_backend`, both loaded when the actor starts; the FaceLandmarker
                is made per input by `tools.pipeline.analyze` (VIDEO mode wants one per stream)
4. `run_batch`  hands inputs to idle actors and collects them with `ray.wait`; Ray restarts an actor
                whose process dies and retries its input (`max_restarts`, `max_task_retries`), and
                past the retries the row says `worker_died`
5. each result is written as it arrives (temp file + os.replace), the index every few seconds and at
   the end, so an interrupted run loses nothing it finished

Results are written by this process (the driver), so on a cluster they land in DIR here; the
workers read the inputs by path, so on a cluster the inputs must be on a filesystem every node
sees at the same path. See docs/scale.md.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.cluster import cluster
from tools.errors import FaceReasonError, MediaError
from tools.files import jsonl_rows, write_atomic

INDEX = "index.csv"
COLUMNS = ["path", "status", "code", "message", "faces", "dominant_emotion", "seconds", "result"]
MANIFEST_SUFFIXES = {".csv", ".jsonl"}
RETRIES = 2  # times an input is tried again after its worker died (Ray's max_task_retries)
INDEX_EVERY_S = 5.0  # during a run the index is rewritten at most this often
WORKER_DIED = "worker_died"


@dataclass(frozen=True)
class Settings:
    """What a result depends on besides the file; the result's name carries their hash."""

    fps: float | None = None
    max_faces: int | None = None  # None: the default of `analyze` (or of `explain`)
    explain: bool = False
    backend: str = "auto"
    model: str | None = None
    adapter: str | None = None
    base_url: str | None = None

    def key(self) -> str:
        """8 hex digits; perception-only runs ignore the reasoner's settings, "auto" counts as
        the backend it stands for today (a newly shipped model is a new setting), and a change
        to the perception code (tools.measurement_fingerprint) is a new setting too."""
        from tools import measurement_fingerprint

        if self.explain:
            from agent.backends import resolve_backend

            fields = {**asdict(self), "backend": resolve_backend(self.backend, self.model, self.adapter)}
        else:
            fields = {"fps": self.fps, "max_faces": self.max_faces}
        fields["measurement"] = measurement_fingerprint()  # new perception code: a new result
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]

    def kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"fps": self.fps}
        if self.max_faces is not None:
            kw["max_faces"] = self.max_faces
        if self.explain:
            kw.update(backend=self.backend, model=self.model, adapter=self.adapter,
                      base_url=self.base_url)
        return kw


@dataclass
class Input:
    path: Path
    extra: dict[str, Any] = field(default_factory=dict)  # the manifest's other columns
    sha256: str | None = None  # None: not a regular file (the row says why)
    result: str | None = None  # the result's file name in DIR


@dataclass
class Summary:
    rows: list[dict[str, Any]]
    index: Path
    done: int = 0  # computed in this run
    skipped: int = 0  # found in DIR from an earlier run
    errors: int = 0  # rows with status "error", skipped or not
    seconds: float = 0.0
    startup_s: float = 0.0  # starting (or joining) the Ray cluster and the workers' models

    def __str__(self) -> str:
        return (f"{len(self.rows)} inputs: {self.done} done, {self.skipped} skipped, "
                f"{self.errors} errors in {self.seconds:.1f} s ({self.startup_s:.1f} s starting "
                f"Ray and the workers); index: {self.index}")


# ------------------------------------------------------------------ inputs
def read_manifest(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV or JSONL manifest, each with a `path` (relative to the manifest's folder)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise FaceReasonError(f"{path.name} is not a UTF-8 text file; a manifest is CSV or JSONL.",
                              code="bad_manifest") from None
    if path.suffix.lower() == ".csv":
        rows: list[Any] = list(csv.DictReader(io.StringIO(text, newline="")))
    else:
        rows = jsonl_rows(text, path.name, code="bad_manifest")
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not row.get("path"):
            raise FaceReasonError(f"{path.name}: entry {n} has no 'path'; a manifest needs a "
                                  "'path' column naming each file.", code="bad_manifest")
    return rows


def collect(paths: list[str | os.PathLike]) -> list[Input]:
    """The inputs, in the order given, each once (a file named twice keeps its first place)."""
    from tools.video import MEDIA_SUFFIXES

    found: dict[Path, Input] = {}

    def add(p: Path, extra: dict[str, Any] | None = None) -> None:
        item = found.setdefault(Path(os.path.normpath(p)), Input(Path(os.path.normpath(p))))
        for k, v in (extra or {}).items():
            item.extra.setdefault(f"manifest_{k}" if k in COLUMNS else k, v)

    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                hidden = any(part.startswith(".") for part in f.relative_to(p).parts)
                if f.suffix.lower() in MEDIA_SUFFIXES and f.is_file() and not hidden:
                    add(f)
        elif p.suffix.lower() in MANIFEST_SUFFIXES and p.is_file():
            for row in read_manifest(p):
                add(p.parent / str(row["path"]), {k: v for k, v in row.items() if k != "path"})
        else:
            add(p)  # whatever its name: the content decides, a missing file is a row
    return list(found.values())


def plan(items: list[Input], settings: Settings) -> list[Input]:
    """Hash every regular file and name its result."""
    from tools.assets import sha256_file

    key = settings.key()
    for item in items:
        if item.path.is_file():
            item.sha256 = sha256_file(item.path)
            stem = re.sub(r"[^\w.-]+", "_", item.path.stem)[:60] or "input"
            item.result = f"{stem}.{item.sha256[:12]}.{key}.json"
    return items


def _refusal(path: Path) -> dict[str, str]:
    """Why a path that is not a regular file cannot be analysed, in tools.video's words."""
    from tools.video import Media

    try:
        Media(path).close()
    except FaceReasonError as exc:
        return {"code": exc.code, "message": str(exc)}
    return {"code": "not_a_file", "message": f"{path.name} could not be read."}


# ------------------------------------------------------------------ the worker
class _Worker:
    """One Ray actor: its own models, one input at a time (`run`). `status` answers while `run`
    works (the actor runs two calls at once), so a caller can see which input a worker is on."""

    def __init__(self, settings: Settings, api_key: str | None = None):
        self.settings, self.api_key = settings, api_key
        self.current: str | None = None
        self.init_error: dict[str, str] | None = None
        try:
            import tools.pipeline  # noqa: F401  MediaPipe, PyAV and torch load once, here
            from tools.emotion_cnn import get_cnn

            get_cnn()
            if settings.explain:
                from agent.backends import make_backend

                make_backend(settings.backend, model=settings.model, adapter=settings.adapter,
                             base_url=settings.base_url, api_key=api_key)
        except Exception as exc:  # reported by status(): the driver stops with its sentence
            self.init_error = _error(exc)

    def status(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "current": self.current, "init_error": self.init_error}

    def run(self, path: str, want_csv: bool) -> dict[str, Any]:
        self.current = path
        try:
            if self.settings.explain:
                from agent import explain
                from agent.commands import result_json

                result = explain(path, api_key=self.api_key, **self.settings.kwargs())
                analysis, text = result.analysis, result_json(result)
            else:
                from tools.commands import analysis_json
                from tools.pipeline import analyze

                analysis = analyze(path, progress=None, **self.settings.kwargs())
                text = analysis_json(analysis)
            out: dict[str, Any] = {"json": text, "csv": analysis.to_csv() if want_csv else None}
        except Exception as exc:
            out = {"error": _error(exc)}
        finally:
            self.current = None
        return out


def _error(exc: Exception) -> dict[str, Any]:
    """An exception as an error row: the user's sentence for a problem they can fix, else the
    exception and its traceback (a bug: one input's row, not the end of the run)."""
    from tools.errors import user_message

    msg = user_message(exc)
    if msg is not None:
        # A bad file stays bad: its error is stored like a result, so a rerun skips it.
        return {"code": getattr(exc, "code", "bad_request"), "message": msg,
                "store": isinstance(exc, MediaError)}
    return {"code": "internal_error", "message": f"internal error: {type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc()}


# ------------------------------------------------------------------ results and the index
def _finished(out: Path, item: Input, want_csv: bool) -> dict[str, Any] | None:
    """The stored result of an input, if this run need not compute it."""
    if item.result is None or not (out / item.result).exists():
        return None
    try:
        payload = json.loads((out / item.result).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # damaged: computed again
    if want_csv and "error" not in payload and not (out / _csv_name(item.result)).exists():
        return None
    return payload


def _csv_name(result: str) -> str:
    return result.removesuffix(".json") + ".csv"


def _row(item: Input, payload: dict[str, Any], stored: bool) -> dict[str, Any]:
    """An index row from a result (the file's content, so a rerun's rows are the same)."""
    row: dict[str, Any] = {"path": str(item.path), "result": item.result if stored else ""}
    if "error" in payload:
        row.update(status="error", code=payload["error"]["code"], message=payload["error"]["message"])
    else:
        analysis = payload["analysis"] if "explanations" in payload else payload
        tracks = analysis["tracks"]
        row.update(status="ok", code="", message="", faces=len(tracks),
                   dominant_emotion=";".join(t["summary"]["dominant_emotion"] for t in tracks),
                   seconds=round(payload["timings"]["total_s"], 3))
    return {**row, **item.extra}


def _store(out: Path, item: Input, res: dict[str, Any]) -> dict[str, Any]:
    """Write one worker's answer into DIR; its index row."""
    if "json" in res:
        write_atomic(out / item.result, res["json"])
        if res["csv"] is not None:
            write_atomic(out / _csv_name(item.result), res["csv"])
        return _row(item, json.loads(res["json"]), stored=True)
    err = res["error"]
    payload = {"error": {"code": err["code"], "message": err["message"]}}  # as the API answers
    if err.get("store"):
        write_atomic(out / item.result, json.dumps(payload, indent=1))
    return _row(item, payload, stored=bool(err.get("store")))


def write_index(out: Path, rows: list[dict[str, Any]]) -> Path:
    extras = list(dict.fromkeys(k for r in rows for k in r if k not in COLUMNS))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS + extras, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_atomic(out / INDEX, buf.getvalue())
    return out / INDEX


def _died(item: Input, exc: Exception, retries: int) -> dict[str, Any]:
    import ray

    why = ("Ray stopped it: the machine ran out of memory"
           if isinstance(exc, ray.exceptions.OutOfMemoryError) else "the process was killed or crashed")
    tries = f"{retries + 1} times" if retries else "once"
    return {"error": {"code": WORKER_DIED, "message": (
        f"The worker analysing {item.path.name} died {tries} ({why}); it was not analysed "
        "(a rerun tries it again).")}}


# ------------------------------------------------------------------ the actors
@contextlib.contextmanager
def _workers(settings: Settings, workers: int | None, jobs: int, api_key: str | None,
             retries: int) -> Iterator[list[Any]]:
    """Started actors (models loaded), killed afterwards. Ray restarts one whose process dies
    (max_restarts) and sends it the call again (max_task_retries)."""
    import ray

    n = min(workers or int(ray.cluster_resources().get("CPU", 1)), jobs)
    worker_cls = ray.remote(_Worker).options(num_cpus=1, max_concurrency=2, max_restarts=-1,
                                             max_task_retries=retries)
    actors = [worker_cls.remote(settings, api_key) for _ in range(n)]
    try:
        for status in ray.get([a.status.remote() for a in actors]):
            if err := status["init_error"]:
                if "traceback" in err:
                    print(err["traceback"], file=sys.stderr)
                raise FaceReasonError(f"the workers could not start: {err['message']}",
                                      code=err["code"])
        yield actors
    finally:
        for a in actors:
            ray.kill(a)


def _results(actors: list[Any], items: list[Input], todo: list[int], want_csv: bool, retries: int,
             on_submit: Callable[[Input, Any], None] | None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(input number, the worker's answer) as they finish; each idle actor gets the next input."""
    import ray

    queue, idle, pending = deque(todo), list(actors), {}
    while queue or pending:
        while idle and queue:
            actor, i = idle.pop(), queue.popleft()
            pending[actor.run.remote(str(items[i].path), want_csv)] = (i, actor)
            if on_submit is not None:
                on_submit(items[i], actor)
        [ref], _ = ray.wait(list(pending), num_returns=1)
        i, actor = pending.pop(ref)
        idle.append(actor)  # a dead actor is restarted by Ray behind the same handle
        try:
            res = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.OutOfMemoryError) as exc:
            res = _died(items[i], exc, retries)
        yield i, res


# ------------------------------------------------------------------ the run
def run_batch(inputs: list[str | os.PathLike], out: str | os.PathLike, settings: Settings = Settings(),
              *, workers: int | None = None, address: str | None = None, want_csv: bool = False,
              api_key: str | None = None, retries: int = RETRIES, progress: bool = True,
              on_submit: Callable[[Input, Any], None] | None = None) -> Summary:
    """Every input through perception (and the reasoner with settings.explain) on Ray.

    workers: actors (one CPU each); default: a local cluster's CPUs, or the joined cluster's.
    on_submit(input, actor): called as each input is handed to an actor.
    """
    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    items = plan(collect(inputs), settings)
    if workers is not None and workers < 1:
        raise FaceReasonError(f"--workers must be at least 1, got {workers}.", code="bad_option")
    summary = Summary(rows=[], index=out / INDEX)
    rows: dict[int, dict[str, Any]] = {}
    todo: list[int] = []
    for i, item in enumerate(items):
        if item.sha256 is None:
            rows[i] = _row(item, {"error": _refusal(item.path)}, stored=False)
        elif (payload := _finished(out, item, want_csv)) is not None:
            rows[i] = _row(item, payload, stored=True)
            summary.skipped += 1
        else:
            todo.append(i)

    def index_rows() -> list[dict[str, Any]]:
        return [rows[i] for i in sorted(rows)]

    try:
        if todo:
            from tqdm import tqdm

            t0 = time.perf_counter()
            with cluster(address, workers), _workers(settings, workers, len(todo), api_key,
                                                     retries) as actors:
                summary.startup_s = time.perf_counter() - t0
                last_index = time.perf_counter()
                with tqdm(total=len(todo), unit="input", desc="batch", disable=not progress,
                          file=sys.stderr, dynamic_ncols=True) as bar:
                    for i, res in _results(actors, items, todo, want_csv, retries, on_submit):
                        if "traceback" in res.get("error", {}):
                            bar.write(f"{items[i].path}: {res['error']['traceback']}")
                        rows[i] = _store(out, items[i], res)
                        summary.done += 1
                        bar.update(1)
                        if time.perf_counter() - last_index > INDEX_EVERY_S:
                            write_index(out, index_rows())
                            last_index = time.perf_counter()
    finally:  # also on Ctrl-C: the index lists everything finished
        summary.rows = index_rows()
        write_index(out, summary.rows)
    summary.errors = sum(r["status"] == "error" for r in summary.rows)
    summary.seconds = time.perf_counter() - t_start
    return summary
