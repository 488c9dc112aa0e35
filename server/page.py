"""The Gradio page served at / by app.py: upload, watch the explanation being written, ask.

It runs the same jobs as the API (server.jobs.explain_job, chat_job), admitted
through the same bounded worker pool (server.runtime.admit), so the page and the
API share one back-pressure limit and one set of sessions.
"""

from __future__ import annotations

import logging
import queue
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import numpy as np

from server.jobs import chat_job, explain_job, probe, safe_name
from server.runtime import ApiError, admit
from tools.errors import FaceReasonError

log = logging.getLogger("facereason.ui")

INTRO = """# FaceReason
Upload a video or a photo of a face. FaceReason tracks each face, measures its
Action Units and emotion over time, and explains what the expression shows.
Then ask follow-up questions such as *"what happens at 2 s?"* or *"when does he start smiling?"*."""
MAX_VIDEO_WIDTH = 640
BOX_COLOURS = [(0, 200, 255), (255, 120, 0), (60, 220, 60), (220, 60, 220)]


# ---------------------------------------------------------------- drawing
def _label_at(analysis, track, row: int) -> str:
    if track.emotions is None or not len(analysis.emotion_labels):
        return ""
    return analysis.emotion_labels[int(np.argmax(track.emotions[row]))]


def annotate_video(src: Path, analysis, dest: Path) -> Path:
    """Re-encode `src` with each track's box and current emotion drawn on every frame.

    With a sampling rate below the video's, a face's box is held from one analysed
    frame to the next (at most half a second), so boxes do not flicker.
    """
    import av
    import cv2

    from tools.video import Media

    per_track = [(t, {int(f): i for i, f in enumerate(t.frame_index)}) for t in analysis.tracks]
    last: dict[int, tuple[int, float]] = {}
    with Media(src) as m, av.open(str(dest), "w") as out:
        w, h = m.info.width, m.info.height
        scale = min(1.0, MAX_VIDEO_WIDTH / w)
        ow, oh = int(w * scale) // 2 * 2, int(h * scale) // 2 * 2
        fps = round(m.info.native_fps or 25)
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "28"})
        stream.width, stream.height, stream.pix_fmt = ow, oh, "yuv420p"
        for fr in m.frames():
            img = cv2.resize(fr.rgb, (ow, oh)) if scale < 1 else fr.rgb.copy()
            for k, (t, rows) in enumerate(per_track):
                if fr.index in rows:
                    last[t.track_id] = (rows[fr.index], fr.time)
                held = last.get(t.track_id)
                if held is None or fr.time - held[1] > 0.5:
                    continue
                row = held[0]
                x0, y0, x1, y1 = (int(v * scale) for v in t.bbox[row])
                colour = BOX_COLOURS[k % len(BOX_COLOURS)]
                cv2.rectangle(img, (x0, y0), (x1, y1), colour, 2)
                text = f"face {t.track_id} {_label_at(analysis, t, row)}".strip()
                cv2.putText(img, text, (x0, max(12, y0 - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                            colour, 1, cv2.LINE_AA)
            for pkt in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return dest


def annotate_image(src: Path, analysis) -> np.ndarray:
    import cv2

    from tools.video import Media

    with Media(src) as m:
        img = next(m.frames()).rgb.copy()
    for k, t in enumerate(analysis.tracks):
        x0, y0, x1, y1 = (int(v) for v in t.bbox[0])
        colour = BOX_COLOURS[k % len(BOX_COLOURS)]
        cv2.rectangle(img, (x0, y0), (x1, y1), colour, 2)
        cv2.putText(img, f"face {t.track_id} {_label_at(analysis, t, 0)}".strip(),
                    (x0, max(12, y0 - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 2, cv2.LINE_AA)
    return img


def _captions(result) -> str:
    """The FEC-Bench-style caption (the subtitle downloads carry each sentence's span)."""
    if len(result.explanations) == 1:
        return result.explanations[0].caption
    return "\n\n".join(f"Face {e.track_id}: {e.caption}" for e in result.explanations)


# ---------------------------------------------------------------- handlers
def _busy_message(exc: ApiError) -> str:
    return f"The server is busy; try again in about {exc.headers.get('Retry-After', '5')} s."


def explain_handler(state, upload: str | None, question: str | None) -> Iterator[tuple]:
    """Yields (status, video, image, plots, explanation, caption, subtitles, session) as work
    proceeds."""
    skip = gr.skip()
    if not upload:
        yield ("Upload a video or image first.", skip, skip, skip, skip, skip, skip, skip)
        return
    try:
        work = admit(state)
    except ApiError as exc:
        yield (_busy_message(exc), skip, skip, skip, skip, skip, skip, skip)
        return
    out_dir = Path(tempfile.mkdtemp(prefix="ui-", dir=state.tmp_root))
    events: queue.Queue = queue.Queue()
    s = state.settings
    try:
        src = Path(upload)
        path = work.dir / safe_name(src.name)
        shutil.copyfile(src, path)
        probe(path, s.limits())
        opts = {"question": (question or "").strip()[:2000] or None, "fps": s.default_fps,
                "max_faces": 4, "label_set": None}

        def job():
            try:
                events.put(("result", explain_job(state, path, opts, work,
                                                         lambda k, d: events.put((k, d)))))
            except BaseException as exc:  # handed to the page thread, which words it
                events.put(("error", exc))

        work.start(job)
    except FaceReasonError as exc:
        work.finish()
        shutil.rmtree(out_dir, ignore_errors=True)
        yield (f"**Cannot use this file:** {exc}", None, None, None, "", "", None, None)
        return
    tokens = 0
    try:
        yield ("Analysing the faces...", None, None, None, "", "", None, None)
        while True:
            kind, data = events.get()
            if kind == "progress":
                frac = data.get("fraction")
                pct = f" {100 * frac:.0f}%" if frac is not None else ""
                stage = "the model is deciding" if data.get("stage") == "model" else "measuring the faces"
                yield (f"Analysing ({stage}){pct}...", skip, skip, skip, skip, skip, skip, skip)
            elif kind == "token":
                # The model writes a short JSON record (ids, label, a sentence); the text a
                # reader wants is rendered from it when it is complete.
                tokens += 1
                if tokens % 8 == 1:
                    yield (f"The model is deciding ({tokens} tokens)...", skip, skip, skip, skip,
                           skip, skip, skip)
            elif kind == "error":
                msg = str(data) if isinstance(data, FaceReasonError) else (
                    "Something went wrong on the server; the log has details.")
                if not isinstance(data, FaceReasonError):
                    log.error("explain failed", exc_info=data)
                yield (f"**Error:** {msg}", skip, skip, skip, skip, skip, skip, skip)
                return
            else:
                yield _final(state, data, src, out_dir)
                return
    finally:
        work.cancel.set()  # the page was closed or errored: stop the worker too
        shutil.rmtree(out_dir, ignore_errors=True)


def _final(state, result, src: Path, out_dir: Path) -> tuple:
    from agent import subtitles
    from tools.plots import plot_analysis

    a = result.analysis
    sid = state.add_session(result)
    video = image = None
    if a.source.kind == "video":
        video = str(annotate_video(src, a, out_dir / "tracked.mp4"))
    else:
        image = annotate_image(src, a)
    plots = [str(p) for p in plot_analysis(a, out_dir / "plot.png")]
    flags = []
    reasons = sorted({e.fallback_reason or "the model's answer was unusable"
                      for e in result.explanations if e.fallback_used})
    if reasons:
        flags.append("written by the rule-based Exp-CoT engine: " + "; ".join(reasons))
    elif result.backend == "engine":
        flags.append("rule-based Exp-CoT engine, no model")
    if a.no_face:
        flags.append("no face found")
    status = f"Done: {len(a.tracks)} face(s), model {result.model or 'n/a'}"
    status += f" ({'; '.join(flags)})." if flags else "."
    text = result.text or result.message
    subs = None
    if result.explanations:
        stem = Path(a.source.name).stem or "caption"
        subs = [str(subtitles.write(result, out_dir / f"{stem}.{fmt}", fmt)) for fmt in ("srt", "vtt")]
    return (status, gr.update(value=video, visible=video is not None),
            gr.update(value=image, visible=image is not None), plots, text, _captions(result),
            subs, {"sid": sid, "src": str(src)})


def chat_handler(state, message: str, history: list, session: dict | None):
    """Answer a follow-up through the agent; show the frame of the moment it is about."""
    history = list(history or [])
    message = (message or "").strip()[:2000]
    if not message:
        return history, "", gr.skip()
    history.append({"role": "user", "content": message})
    if not session:
        history.append({"role": "assistant", "content": "Explain a video or image first."})
        return history, "", gr.skip()
    try:
        work = admit(state)
    except ApiError as exc:
        history.append({"role": "assistant", "content": _busy_message(exc)})
        return history, "", gr.skip()
    try:
        sess = state.get_session(session["sid"])
        fut = work.start(chat_job, state, sess, message, work)
        ans = fut.result(timeout=state.settings.request_timeout_s)
    except FaceReasonError as exc:
        history.append({"role": "assistant", "content": str(exc)})
        return history, "", gr.skip()
    finally:
        work.cancel.set()
        if work.future is None:
            work.finish()
    text = ans.text
    if ans.fallback_used:  # say so: this answer came from the rules, not the model
        text += "\n\n_(a rule-based answer: the model's reply could not be used)_"
    history.append({"role": "assistant", "content": text})
    t = getattr(ans, "frame_time", None)
    if t is None and getattr(ans, "cited_times", None):
        t = ans.cited_times[0]
    frame = gr.skip()
    if t is not None:
        from tools.video import read_frames_at

        try:
            frames = read_frames_at(session["src"], [float(t)])
            frame = gr.update(value=frames[0], label=f"The moment at {float(t):.1f} s") if frames \
                else gr.skip()
        except FaceReasonError:  # the page's copy of the upload has expired
            frame = gr.skip()
    return history, "", frame


# ---------------------------------------------------------------- layout
def build_ui(state) -> gr.Blocks:
    from tools.assets import media

    examples = []
    try:
        examples = [[str(media("single_face.mp4"))]]
    except Exception:  # test media not fetched: the page works without the example
        examples = []

    with gr.Blocks(title="FaceReason", analytics_enabled=False) as page:
        gr.Markdown(INTRO)
        session = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Video or image", file_types=["video", "image"],
                                 type="filepath", elem_id="upload")
                question = gr.Textbox(label="Question (optional)", lines=1, max_length=2000,
                                      elem_id="question")
                go = gr.Button("Explain", variant="primary", elem_id="explain")
                if examples:
                    gr.Examples(examples, inputs=[upload], label="Try the sample")
                status = gr.Markdown(elem_id="status")
            with gr.Column(scale=1):
                video = gr.Video(label="Tracked faces", elem_id="tracked", interactive=False)
                image = gr.Image(label="Tracked faces", visible=False, elem_id="tracked-image",
                                 interactive=False)
        plots = gr.Gallery(label="AU heatmap and emotion timeline, per face", columns=1,
                           height=720, object_fit="contain", elem_id="plots")
        with gr.Row():
            with gr.Column(scale=2):
                explanation = gr.Markdown(elem_id="explanation", label="Explanation")
            with gr.Column(scale=1):
                caption = gr.Textbox(label="Caption", lines=6, interactive=False,
                                     elem_id="caption")
                subs = gr.File(label="Caption as subtitles (SRT, WebVTT)", file_count="multiple",
                               interactive=False, elem_id="subtitles")
        gr.Markdown("### Ask about it")
        with gr.Row():
            with gr.Column(scale=2):
                chatbot = gr.Chatbot(label="Follow-up", height=300, elem_id="chat")
                ask = gr.Textbox(placeholder="What happens at 2 s?", show_label=False,
                                 elem_id="ask")
            with gr.Column(scale=1):
                moment = gr.Image(label="The moment", interactive=False, elem_id="moment")

        def _explain(upload_path, q):
            yield from explain_handler(state, upload_path, q)

        def _chat(msg, hist, sess):
            return chat_handler(state, msg, hist, sess)

        go.click(_explain, [upload, question],
                 [status, video, image, plots, explanation, caption, subs, session])
        ask.submit(_chat, [ask, chatbot, session], [chatbot, ask, moment])
    return page


__all__ = ["build_ui", "annotate_video", "annotate_image"]
