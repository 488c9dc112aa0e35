"""The tools the model may call: answers from the Analysis, with ids an answer can cite."""

from __future__ import annotations

import numpy as np
import pytest
from agent_synthetic import make_analysis

from agent.decision import ToolRequest as R
from agent.toolbox import Toolbox, ToolError, schemas, tool_lines
from tools.facs import AU_CODES


def test_schemas_match_toolbox_methods():
    names = [s["function"]["name"] for s in schemas()]
    assert names == ["moment", "time_window", "compare_moments", "inspect_face", "clip_context",
                     "list_events"]
    for n in names:
        assert callable(getattr(Toolbox, n))
    assert tool_lines().startswith("moment(t), time_window(start, end)")


def test_time_window_matches_series_and_gets_an_id():
    a = make_analysis(faces=2)
    box = Toolbox(a, default_track=0)
    out = box.call(R(tool="time_window", args={"start": 3.0, "end": 4.0}))
    t = a.track(0)
    rows = (t.timestamps >= 3.0) & (t.timestamps <= 4.0)
    k = AU_CODES.index("AU12")
    assert out["id"] == "W1" and box.results["W1"] is out
    assert out["frames"] == int(rows.sum())
    assert out["aus_present"]["AU12"] == pytest.approx(float(t.aus[rows, k].mean()), abs=0.01)
    assert "AU26" not in out["aus_present"]  # face 1's AU, not face 0's
    assert out["label"] == "happiness" == next(iter(out["emotions"]))
    assert out["valence"] == pytest.approx(float(t.valence[rows].mean()), abs=0.01)
    other = box.call(R(tool="moment", args={"t": 2.6, "track_id": 1}))
    assert other["id"] == "W2" and other["at"] == 2.6 and (other["start"], other["end"]) == (2.12, 3.0)
    assert {"AU01", "AU02", "AU26"} <= set(other["aus_present"])


def test_compare_moments_sign():
    a = make_analysis(faces=1)
    out = Toolbox(a).call(R(tool="compare_moments", args={"t1": 0.5, "t2": 3.0}))
    assert out["id"] == "C1"
    assert out["au_change"]["AU12"] > 1.0
    assert out["emotion_change"]["happiness"] > 0.3
    assert out["valence_change"] > 0


def test_list_events_uses_the_faces_event_ids():
    a = make_analysis(faces=1)
    box = Toolbox(a)
    allev = box.call(R(tool="list_events", args={}))
    assert [(e["id"], e["au"]) for e in allev["events"]] == [("AU45a", "AU45"), ("AU12a", "AU12"), ("AU06a", "AU06")]
    only = box.call(R(tool="list_events", args={"au": "au12"}))
    assert [e["id"] for e in only["events"]] == ["AU12a"]
    late = box.call(R(tool="list_events", args={"start": 5.4, "end": 6.0}))
    assert {e["au"] for e in late["events"]} == {"AU12", "AU06"}
    assert box.results == {}  # events keep their own ids: nothing new to cite


def test_inspect_face_and_context_offline():
    a = make_analysis(faces=2)
    box = Toolbox(a)
    f = box.call(R(tool="inspect_face", args={"track_id": 1}))
    assert [(s["id"], s["label"]) for s in f["segments"]] == [("neutral2", "neutral"), ("surprise1", "surprise"),
                                                              ("neutral1", "neutral")]
    assert f["other_faces"] == [0]
    ctx = box.call(R(tool="clip_context", args={}))
    assert ctx["status"] == "off"  # no path to score and nothing scored: says so
    assert a.context.status == "off"  # and nothing was written into the Analysis


@pytest.mark.parametrize("req,needle", [
    (R(tool="look_closer"), "unknown tool"),
    (R(tool="time_window", args={"start": 1}), "missing argument(s) end"),
    (R(tool="time_window", args={"start": "soon", "end": 2}), "must be a number"),
    (R(tool="time_window", args={"start": 1, "end": 2, "face": 0}), "unknown argument(s) face"),
    (R(tool="inspect_face", args={"track_id": 9}), "no face track 9"),
])
def test_bad_calls_raise_and_run_reports(req, needle):
    box = Toolbox(make_analysis(faces=2))
    with pytest.raises(ToolError) as err:
        box.call(req)
    assert needle in str(err.value)
    assert needle in box.run(req)["error"]


def test_window_outside_face_notes_it():
    out = Toolbox(make_analysis(faces=2)).call(
        R(tool="time_window", args={"start": 5.6, "end": 5.9, "track_id": 1}))
    assert "only visible" in out["note"]
    assert np.isfinite(out["valence"])
