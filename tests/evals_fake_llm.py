"""A tiny OpenAI-schema chat server for the LLM-judge tests (a fixture, not a model).

It listens on 127.0.0.1 on a free port and answers `/v1/chat/completions`
deterministically by reading the judge's prompt: events are the caption's
sentences with the time phrases cut; a relation is entailment when the event
text occurs in the description, else neutral; an A event matches the B event
with the same text. `script` makes the first replies fail in chosen ways
("500", "garbage", "fence") to exercise retries and parsing.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_TIME = re.compile(r"^(at the beginning|at first|then|as the video progresses|in the middle|"
                   r"towards the end|finally),?\s*", re.I)


def _section(prompt: str, head: str, stop: str) -> str:
    m = re.search(rf"{head}:\n(.*?)\n\n{stop}", prompt, re.S)
    return m.group(1).strip() if m else ""


def _numbered(block: str) -> list[str]:
    return [re.sub(r"^\d+\.\s*", "", line).strip() for line in block.splitlines() if line.strip()]


def answer(prompt: str) -> dict:
    if "key events" in prompt:
        caption = _section(prompt, "Description", "List at most")
        events = [_TIME.sub("", s).strip() for s in re.split(r"(?<=\.)\s+", caption)]
        return {"events": [e.rstrip(".") for e in events if e][:10]}
    if "Events:" in prompt:
        desc = _section(prompt, "Description", "Events").lower()
        events = _numbered(_section(prompt, "Events", "For every event"))
        return {"relations": [{"index": i, "relationship": "entailment" if e.lower() in desc else "neutral",
                               "reason": "text match"} for i, e in enumerate(events, 1)]}
    a = _numbered(_section(prompt, "List A", "List B"))
    b = _numbered(_section(prompt, "List B", "For every event"))
    return {"matches": [{"index": i, "match": (b.index(e) + 1) if e in b else 0} for i, e in enumerate(a, 1)]}


class FakeLLM:
    def __init__(self, script: list[str] | None = None):
        self.script = list(script or [])
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                mode = outer.script.pop(0) if outer.script else "ok"
                if mode == "500":
                    self._send(500, b'{"error": "overloaded"}')
                    return
                if mode == "400":
                    self._send(400, b'{"error": "bad model"}')
                    return
                content = json.dumps(answer(body["messages"][0]["content"]))
                if mode == "garbage":
                    content = "Sure! Here you go: events are various."
                elif mode == "fence":
                    content = f"```json\n{content}\n```"
                reply = {"id": "x", "object": "chat.completion", "model": body["model"],
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": content}}]}
                self._send(200, json.dumps(reply).encode())

            def _send(self, code: int, data: bytes):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
