"""The HTTP API on real media: results, limits, errors, auth, CORS, back-pressure, cleanup."""

from __future__ import annotations

import json
import os
import threading
import time

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import app as server


def _client(tmp_path_factory, **kw) -> tuple[TestClient, server.ServerState, str]:
    tmp = str(tmp_path_factory.mktemp("served"))
    fa = server.create_app(server.Settings(ui=False, tmp_dir=tmp, **kw))
    return TestClient(fa), fa.state.fr, tmp


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    c, state, tmp = _client(tmp_path_factory)
    with c:
        yield c, state, tmp


def _upload(path, name=None, mime="application/octet-stream"):
    return {"file": (name or path.name, path.read_bytes(), mime)}


def _wait_idle(state, tmp, timeout=60.0):
    """The pool has given back every slot and the temp root holds nothing."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if state.pool.in_use == 0 and not os.listdir(tmp):
            return
        time.sleep(0.05)
    raise AssertionError(f"not idle: in_use={state.pool.in_use}, left={os.listdir(tmp)}")


def _events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        out.append((lines["event"], json.loads(lines["data"])))
    return out


# ---------------------------------------------------------------- health
def test_health_readiness_and_models(api):
    c, _, _ = api
    assert c.get("/healthz").json() == {"status": "ok"}
    r = c.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"]["perception"] is True
    m = c.get("/v1/models").json()
    from agent.backends import resolve_backend

    assert m["backend"] == resolve_backend("auto") and "emotions" in m["label_sets"]  # the ship rule's
    assert len(m["data"]) == 1 and m["data"][0]["id"]


def test_openapi_uses_the_analysis_and_explanation_types(api):
    c, _, _ = api
    spec = c.get("/openapi.json").json()
    names = set(spec["components"]["schemas"])
    assert {"Analysis", "Explanation", "ExplainResponse", "Track"} <= names
    ex = spec["components"]["schemas"]["ExplainResponse"]["properties"]
    assert ex["analysis"]["$ref"].endswith("/Analysis")
    assert ex["explanations"]["items"]["$ref"].endswith("/Explanation")


# ---------------------------------------------------------------- analyze
def test_analyze_json_and_csv_agree_with_the_library(api, media, analyses):
    c, state, tmp = api
    r = c.post("/v1/analyze", files=_upload(media("single_face.mp4")), data={"fps": "5"})
    assert r.status_code == 200, r.text
    data = r.json()
    ref = analyses("single_face.mp4", fps=5.0)
    assert data["source"]["name"] == "single_face.mp4"
    assert data["source"]["sha256"] == ref.source.sha256
    assert len(data["tracks"]) == len(ref.tracks) == 1
    np.testing.assert_allclose(data["tracks"][0]["timestamps"], ref.tracks[0].timestamps, atol=1e-4)
    assert "landmarks" not in data["tracks"][0] or data["tracks"][0]["landmarks"] is None
    assert tmp not in r.text
    assert r.headers["x-session-id"] in state.sessions

    r = c.post("/v1/analyze", files=_upload(media("single_face.mp4")), data={"fps": "5"},
               headers={"Accept": "text/csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = r.text.strip().splitlines()
    assert rows[0].startswith("frame,timestamp,face_id")
    assert len(rows) - 1 == ref.tracks[0].n
    _wait_idle(state, tmp)


def test_a_named_label_set_replaces_the_emotion_columns(api, media):
    from tools.labelsets import load_label_set

    c, _, _ = api
    r = c.post("/v1/analyze", files=_upload(media("single_face.jpg")), data={"label_set": "academic"})
    assert r.status_code == 200, r.text
    assert r.json()["emotion_labels"] == load_label_set("academic").labels


def test_image_with_several_faces(api, media):
    c, _, _ = api
    r = c.post("/v1/analyze", files=_upload(media("multi_face.jpg")), data={"max_faces": "8"})
    assert r.status_code == 200
    assert r.json()["source"]["kind"] == "image" and len(r.json()["tracks"]) >= 4


# ---------------------------------------------------------------- explain + chat
@pytest.mark.slow
def test_explain_returns_one_explanation_per_face_and_a_session(api, media):
    c, state, tmp = api
    r = c.post("/v1/explain-expression", files=_upload(media("single_face.mp4")),
               data={"fps": "10", "question": "Is he happy?"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["explanations"]) == len(body["analysis"]["tracks"]) == 1
    e = body["explanations"][0]
    assert e["track_id"] == body["analysis"]["tracks"][0]["track_id"]
    assert e["conclusion"]["label"]
    assert "**Conclusion:**" in body["text"] and body["model"] and body["backend"]
    assert body["flags"]["no_face"] is False
    assert body["session_id"] in state.sessions
    _wait_idle(state, tmp)


def test_explain_without_a_face_is_a_result_not_an_error(api, media):
    c, _, _ = api
    r = c.post("/v1/explain-expression", files=_upload(media("no_face.mp4")), data={"fps": "2"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["flags"]["no_face"] is True and body["explanations"] == []
    assert "no face" in (body["message"] + body["text"]).lower()


@pytest.mark.slow
def test_streaming_sends_progress_then_tokens_then_the_result(api, media):
    c, state, tmp = api
    with c.stream("POST", "/v1/explain-expression", files=_upload(media("single_face.mp4")),
                  data={"fps": "10", "stream": "true"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    events = _events(text)
    kinds = [k for k, _ in events]
    assert kinds[-1] == "result" and kinds.count("result") == 1
    perception = [i for i, (k, d) in enumerate(events)
                  if k == "progress" and d["stage"] == "perception"]
    tokens_at = [i for i, (k, _) in enumerate(events) if k == "token"]
    assert perception, kinds[:10]
    if tokens_at:  # perception is finished before the model writes
        assert max(perception) < min(tokens_at)
    fractions = [events[i][1]["fraction"] for i in perception]
    assert fractions == sorted(fractions) and fractions[-1] > 0.9
    final = events[-1][1]
    assert len(final["explanations"]) == 1 and final["session_id"] in state.sessions
    tokens = "".join(d["text"] for k, d in events if k == "token")
    if final["backend"] != "engine":  # a model wrote the text: the streamed tokens are it
        assert tokens.strip() and final["explanations"][0]["conclusion"]["label"]
    _wait_idle(state, tmp)


@pytest.mark.slow
def test_chat_answers_about_the_moment_asked(api, media):
    c, state, tmp = api
    r = c.post("/v1/explain-expression", files=_upload(media("single_face.mp4")), data={"fps": "8"})
    sid = r.json()["session_id"]
    a = c.post("/v1/chat", json={"session_id": sid, "question": "What happens at 2 s?"})
    assert a.status_code == 200, a.text
    body = a.json()
    assert body["frame_time"] is not None and abs(body["frame_time"] - 2.0) <= 0.5
    assert body["record"] is not None and not body["fallback_used"]  # the default reasoner answered
    assert "2.0 s" in body["text"]
    _wait_idle(state, tmp)


def test_chat_needs_a_known_session(api):
    c, _, _ = api
    r = c.post("/v1/chat", json={"session_id": "0" * 32, "question": "what happens at 1 s?"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_session"
    r = c.post("/v1/chat", json={"session_id": "../../etc/passwd", "question": "hi"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"


# ---------------------------------------------------------------- bad input
def _flv(p):
    with av.open(str(p), "w", format="flv") as out:
        s = out.add_stream("flv", rate=10)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        for _ in range(3):
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8),
                                                           format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)


def _corpus(tmp_path, media) -> list[tuple[str, object, dict, int, str]]:
    """(case, upload path, form, expected status, expected code): the perception issue's list."""
    cases = []
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    cases.append(("zero-byte file", p, {}, 400, "empty_file"))
    p = tmp_path / "notes.mp4"
    p.write_text("this is not a video\n" * 20)
    cases.append(("text renamed .mp4", p, {}, 415, "unreadable_media"))
    data = media("single_face.mp4").read_bytes()
    p = tmp_path / "truncated.mp4"
    p.write_bytes(data[: len(data) // 2])
    cases.append(("truncated mp4", p, {}, 415, "unreadable_media"))
    p = tmp_path / "clip.flv"
    _flv(p)
    cases.append(("flv container", p, {}, 415, "unsupported_media"))
    p = tmp_path / "anim.gif"
    Image.new("RGB", (64, 64)).save(p)
    cases.append(("gif", p, {}, 415, "unsupported_media"))
    p = tmp_path / "dot.png"
    Image.new("RGB", (1, 1)).save(p)
    cases.append(("1x1 image", p, {}, 422, "too_small"))
    p = tmp_path / "huge.png"
    Image.new("RGB", (5000, 4000)).save(p)
    cases.append(("20 Mpx image", p, {}, 413, "too_many_pixels"))
    good = media("single_face.jpg")
    cases.append(("fps 0", good, {"fps": "0"}, 422, "validation_error"))
    cases.append(("fps not a number", good, {"fps": "fast"}, 422, "validation_error"))
    cases.append(("max_faces 100", good, {"max_faces": "100"}, 422, "validation_error"))
    cases.append(("label set as a path", good, {"label_set": "../../etc/passwd"}, 422,
                  "unknown_label_set"))
    cases.append(("unknown label set", good, {"label_set": "nosuch"}, 422, "unknown_label_set"))
    return cases


@pytest.mark.parametrize("route", ["/v1/analyze", "/v1/explain-expression"])
def test_every_bad_input_is_a_json_4xx_naming_the_problem(api, media, tmp_path, route):
    c, state, tmp = api
    for case, path, form, status, code in _corpus(tmp_path, media):
        r = c.post(route, files=_upload(path), data=form)
        assert r.status_code == status, (case, r.text)
        err = r.json()["error"]
        assert err["code"] == code, (case, err)
        assert err["message"] and "Traceback" not in err["message"], case
        assert tmp not in err["message"] and str(tmp_path) not in err["message"], case
    _wait_idle(state, tmp)


def test_requests_without_a_file_or_with_a_path_for_a_name(api, media):
    c, state, tmp = api
    r = c.post("/v1/analyze", data={"fps": "5"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
    r = c.post("/v1/analyze", json={"file": "/etc/passwd"})
    assert r.status_code == 422
    # A client-chosen name never becomes a path: it is reduced to a base name.
    r = c.post("/v1/analyze", files=_upload(media("single_face.jpg"), name="../../../etc/x.jpg"))
    assert r.status_code == 200 and r.json()["source"]["name"] == "x.jpg"
    assert not os.path.exists("/etc/x.jpg")
    _wait_idle(state, tmp)


def test_oversize_and_overlong_uploads(tmp_path_factory, media):
    c, state, tmp = _client(tmp_path_factory, max_upload_mb=0.1, max_duration_s=1.0)
    with c:
        r = c.post("/v1/analyze", files=_upload(media("single_face.mp4")))  # 204 KiB
        assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"
        short = tmp_path_factory.mktemp("short") / "small.mp4"
        _tiny_video(short, seconds=3.0)
        r = c.post("/v1/analyze", files=_upload(short))
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_long"
        _wait_idle(state, tmp)


def _tiny_video(p, seconds: float, fps: int = 10, size: int = 64) -> None:
    with av.open(str(p), "w") as out:
        s = out.add_stream("mpeg4", rate=fps)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        for i in range(int(seconds * fps)):
            img = np.full((size, size, 3), (i * 7) % 255, np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)


# ---------------------------------------------------------------- auth, CORS, busy
def test_bearer_token_guards_the_api_but_not_health(tmp_path_factory, media):
    c, _, _ = _client(tmp_path_factory, api_key="s3cret")
    with c:
        assert c.get("/healthz").status_code == 200
        r = c.get("/v1/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
        assert c.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        r = c.post("/v1/analyze", files=_upload(media("single_face.jpg")))
        assert r.status_code == 401


def test_cors_is_closed_by_default(api):
    c, _, _ = api
    r = c.options("/v1/models", headers={"Origin": "https://evil.example",
                                         "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in r.headers
    r = c.get("/v1/models", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_a_full_pool_answers_503_with_retry_after(tmp_path_factory, media):
    c, state, tmp = _client(tmp_path_factory, workers=1, queue=0)
    with c:
        assert state.pool.try_acquire()  # the one slot is now taken
        try:
            r = c.post("/v1/analyze", files=_upload(media("single_face.jpg")))
            assert r.status_code == 503 and r.json()["error"]["code"] == "busy"
            assert int(r.headers["retry-after"]) >= 1
        finally:
            state.pool.release()
        assert c.post("/v1/analyze", files=_upload(media("single_face.jpg"))).status_code == 200
        _wait_idle(state, tmp)


def test_concurrent_requests_beyond_the_queue_get_503(tmp_path_factory, media):
    c, state, tmp = _client(tmp_path_factory, workers=1, queue=1)
    statuses: list[int] = []
    with c:
        def send():
            r = c.post("/v1/analyze", files=_upload(media("single_face.mp4")))
            statuses.append(r.status_code)

        threads = [threading.Thread(target=send) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        _wait_idle(state, tmp)
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 1
    assert statuses.count(200) + statuses.count(503) == 4


# ---------------------------------------------------------------- timeout, disconnect, cleanup
def test_timeout_stops_the_worker_and_removes_the_upload(tmp_path_factory, media):
    c, state, tmp = _client(tmp_path_factory, request_timeout_s=0.5)
    with c:
        r = c.post("/v1/analyze", files=_upload(media("WolfgangLanger_Pexels.mp4")))
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        _wait_idle(state, tmp, timeout=20)  # stopped at its next frame, not after 470 frames


def test_a_client_leaving_a_stream_stops_the_work(tmp_path_factory, media):
    c, state, tmp = _client(tmp_path_factory)
    with c:
        with c.stream("POST", "/v1/explain-expression",
                      files=_upload(media("WolfgangLanger_Pexels.mp4")),
                      data={"stream": "true"}) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("event: progress"):
                    break  # leave after the first progress event
        _wait_idle(state, tmp, timeout=30)
