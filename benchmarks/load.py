"""Load test of the explain-expression API on loopback: latency, throughput, back-pressure.

    python benchmarks/load.py                       # 1, 4, 8, 16 clients, 32 requests each
    python benchmarks/load.py --levels 1,4 --requests 8 --fps 5   # a quick check

Starts `python app.py --no-ui` on a free 127.0.0.1 port (or uses --url), then,
per concurrency level, N client threads send real multipart explain requests
(the bundled single_face.mp4) until the level's fixed count is done. A 503 is
back-pressure, not an error: the client waits Retry-After and sends again, and
its latency counts from the first attempt (what a user waits). Reports p50/p95
latency, requests/s, errors, 503s, the server's peak RSS, time to first
streamed token, and whether the server's temp dir is empty afterwards.
Timings are for the machine it ran on; run it when the machine is quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp: str, workers: int, queue: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = dict(os.environ, FACEREASON_TMP_DIR=tmp, GRADIO_ANALYTICS_ENABLED="False",
               PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--no-ui", "--port", str(port),
                             "--workers", str(workers), "--queue", str(queue)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 180:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("server not healthy after 180 s")


class MemorySampler(threading.Thread):
    """Peak resident memory of the server process (and children), sampled every 0.1 s."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.proc, self.peak, self.stop = psutil.Process(pid), 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                rss = self.proc.memory_info().rss + sum(
                    c.memory_info().rss for c in self.proc.children(recursive=True))
                self.peak = max(self.peak, rss)
            except psutil.Error:
                return
            time.sleep(0.1)


def one_request(client: httpx.Client, url: str, data: bytes, form: dict, key: str | None) -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    t0, busy = time.perf_counter(), 0
    while True:
        r = client.post(url + "/v1/explain-expression", headers=headers, data=form,
                        files={"file": ("single_face.mp4", data, "video/mp4")})
        if r.status_code == 503 and "retry-after" in r.headers:
            busy += 1
            time.sleep(float(r.headers["retry-after"]))
            continue
        return {"status": r.status_code, "latency": time.perf_counter() - t0, "busy": busy}


def run_level(url: str, clients: int, total: int, data: bytes, form: dict,
              key: str | None) -> dict:
    results: list[dict] = []
    lock = threading.Lock()
    remaining = [total]

    def worker():
        with httpx.Client(timeout=600) as client:
            while True:
                with lock:
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                res = one_request(client, url, data, form, key)
                with lock:
                    results.append(res)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = sorted(r["latency"] for r in results if r["status"] == 200)
    q = statistics.quantiles(ok, n=20, method="inclusive") if len(ok) >= 2 else ok * 19
    return {"clients": clients, "requests": total, "ok": len(ok),
            "errors": sum(r["status"] != 200 for r in results),
            "busy_503": sum(r["busy"] for r in results),
            "p50_s": round(statistics.median(ok), 3) if ok else None,
            "p95_s": round(q[18], 3) if ok else None,
            "req_per_s": round(len(ok) / wall, 3), "wall_s": round(wall, 2)}


def time_to_first_token(url: str, data: bytes, form: dict, key: str | None) -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    t0 = time.perf_counter()
    first: dict[str, float] = {}
    backend = None
    with httpx.Client(timeout=600) as c, c.stream(
            "POST", url + "/v1/explain-expression", headers=headers,
            data={**form, "stream": "true"},
            files={"file": ("single_face.mp4", data, "video/mp4")}) as r:
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
                first.setdefault(event, time.perf_counter() - t0)
            elif line.startswith("data: ") and event == "result":
                backend = json.loads(line[6:])["backend"]
    return {"first_progress_s": round(first.get("progress", -1), 3),
            "first_token_s": round(first["token"], 3) if "token" in first else None,
            "result_s": round(first.get("result", -1), 3), "backend": backend}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--levels", default="1,4,8,16")
    ap.add_argument("--requests", type=int, default=32, help="requests per level")
    ap.add_argument("--fps", type=float, default=10.0, help="analysis rate sent with each request")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--queue", type=int, default=8)
    ap.add_argument("--url", help="use a running server instead of starting one")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    from tools.assets import media

    data = media("single_face.mp4").read_bytes()
    form = {"fps": str(args.fps)}
    key = os.environ.get("FACEREASON_API_KEY")
    tmp = tempfile.mkdtemp(prefix="facereason-load-")
    proc = None
    url = args.url
    if url is None:
        proc, url = start_server(tmp, args.workers, args.queue)
    sampler = MemorySampler(proc.pid) if proc else None
    if sampler:
        sampler.start()
    try:
        one_request(httpx.Client(timeout=600), url, data, form, key)  # warm-up (model load)
        rows = [run_level(url, int(n), args.requests, data, form, key)
                for n in args.levels.split(",")]
        ttft = time_to_first_token(url, data, form, key)
    finally:
        if sampler:
            sampler.stop.set()
        if proc:
            proc.terminate()
            proc.wait(timeout=30)
    leftover = os.listdir(tmp) if os.path.isdir(tmp) else []
    report = {"levels": rows, "stream": ttft, "fps": args.fps, "workers": args.workers,
              "queue": args.queue, "peak_rss_mib": round(sampler.peak / 2**20) if sampler else None,
              "temp_dir_empty_after": not leftover, "cpus": os.cpu_count()}
    print("| clients | requests | ok | errors | 503 retries | p50 s | p95 s | req/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clients']} | {r['requests']} | {r['ok']} | {r['errors']} | {r['busy_503']} "
              f"| {r['p50_s']} | {r['p95_s']} | {r['req_per_s']} |")
    print(f"\nstreaming: {ttft}")
    print(f"peak server RSS: {report['peak_rss_mib']} MiB; temp dir empty afterwards: "
          f"{report['temp_dir_empty_after']}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0 if not leftover and all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
