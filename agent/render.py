"""From a decision to the text a user reads: the one place where an answer is rendered.

`explanation(analysis, track, decision)` writes the ExpLLM layout (Key
Observations / Overall Emotional Interpretation / Conclusion) and the
FEC-Bench-style caption; `answer(...)` writes the reply to a follow-up
question. Every AU, intensity, time span and segment comes from the Analysis
through the ids the decision cites; the model's own words (`note`) are added
only after agent/faithfulness.py has passed them, and otherwise withheld
with the reason.
"""

from __future__ import annotations

from agent import evidence as ev
from agent import faithfulness
from agent.decision import Answer, Decision
from agent.evidence import FaceFacts
from agent.phrases import Phrases, num, sentence, spans_text
from agent.schema import CaptionSentence, Conclusion, EvidenceItem, Explanation, KeyObservation
from tools.analysis import Analysis, Track
from tools.facs import AU_NAMES, NEUTRAL

CAPTION_ACTIONS = 2  # movements narrated per caption sentence
ALT_BRIEF_SHARE = 0.15  # a reading set aside that led less of the face than this led "briefly"
# A reading set aside with no evidence named, that never led and averaged less than
# this, was never in play: "sadness was set aside, its probability averaged 0.00" is
# filler, so the sentence is left out.
ALT_MIN_PROB = 0.05


def told(label: str, d: Decision, f: FaceFacts) -> str:
    """How a segment measured as `label` is told.

    A reading the decision ruled out (`alt`) is told as the decided label ("the stretch
    the emotion model read as surprise is fear"), but only where the arc tells no segment
    measured as that label: there the measurement missed the expression and the alt
    stretch is where it shows. Where the arc has the label's own stretch, the ruled-out
    reading is the face's overall label, not a misread stretch: she cried and then
    laughed, happiness over sadness, and the crying is still told as crying.
    """
    if d.alt is None or label != d.alt:
        return label
    if any(f.segments[i].label == d.label for i in d.arc if i in f.segments):
        return label
    return d.label


# ------------------------------------------------------------------ explanation
def observations(f: FaceFacts, d: Decision, ph: Phrases) -> list[KeyObservation]:
    out = []
    for eid in sorted(d.cite, key=lambda i: (f.events[i].start, i)):
        e = f.events[eid]
        out.append(KeyObservation(au=e.au, name=e.name, intensity=round(e.peak, 1),
                                  start=round(e.start, 2), end=round(e.end, 2),
                                  suggests=ph.suggests(e.au, d.label)))
    return out


def _several(f: FaceFacts, ids: list[str]) -> bool:
    """Whether the events `ids` name more than one AU (a cue list's verb agrees with that)."""
    return len({f.events[i].au for i in ids}) > 1


def _cue_list(f: FaceFacts, ids: list[str], ph: Phrases) -> str:
    seen, items = set(), []
    for i in ids:
        e = f.events[i]
        if e.au not in seen:
            seen.add(e.au)
            items.append(f"{e.au} ({e.name})")
    return ph.listing(items)


def _alt_sentence(analysis: Analysis, f: FaceFacts, d: Decision, ph: Phrases) -> str:
    alt = d.alt or ""
    if not d.why:
        # The mean over the face, said as a mean; where the reading led for a while, say where.
        mean = ev.mean_emotions(analysis, f.track).get(alt, 0.0)
        prob = f"{mean:.2f}"
        led = [(s.start, s.end) for s in f.segments.values() if s.label == alt]  # in time order
        if not led and mean < ALT_MIN_PROB:
            return ""
        if led:
            # "briefly" only where it was brief: WolfgangLanger's sadness leads 0.0-5.8 s of 19.7.
            share = sum(b - a for a, b in led) / max(f.track.end - f.track.start, 1e-9)
            key = "interp_alt_prob_brief" if share < ALT_BRIEF_SHARE else "interp_alt_prob_led"
            return ph.pick(key, alt=sentence(alt), prob=prob, spans=spans_text(led))
        return ph.pick("interp_alt_prob", alt=sentence(alt), prob=prob)
    aus = {f.events[i].au for i in d.why}
    verb = "are" if _several(f, d.why) else "is"
    mine, theirs = ev.prototype_aus(d.label), ev.prototype_aus(alt)
    # "part of X's pattern, not of Y's" only where the EMFACS table says so.
    key = "interp_alt_aus" if all(a in mine and a not in theirs for a in aus) else "interp_alt_plain"
    return ph.pick(key, alt=sentence(alt), alt_l=alt, cues=_cue_list(f, d.why, ph), verb=verb,
                   label=d.label)


def _arc_readings(f: FaceFacts, d: Decision) -> list[tuple[str, list[tuple[float, float]]]]:
    """The readings the arc tells besides the decided label, in order, with their spans."""
    out: dict[str, list[tuple[float, float]]] = {}
    for i in d.arc:
        s = f.segments.get(i)
        if s is None:
            continue
        label = told(s.label, d, f)
        if label not in (d.label, NEUTRAL):
            out.setdefault(label, []).append((s.start, s.end))
    return list(out.items())


def interpretation(analysis: Analysis, f: FaceFacts, d: Decision, ph: Phrases) -> str:
    t = f.track
    probs = ev.mean_emotions(analysis, t)
    parts = []
    # Cited movements outside the label's EMFACS pattern are told apart, not said to
    # "point to" it (AU09, the nose wrinkler, does not point to happiness).
    pattern = ev.prototype_aus(d.label)
    fits = [i for i in d.cite if not pattern or f.events[i].au in pattern]
    others = [i for i in d.cite if i not in fits]
    if fits:
        parts.append(ph.pick("interp_cues" if _several(f, fits) else "interp_cue", cues=_cue_list(f, fits, ph),
                             label=d.label))
    # A cited movement of another reading the arc tells is said to belong to it (crying
    # then laughing: AU01 is the crying's, not a stray beside the smile).
    for reading, spans in _arc_readings(f, d):
        mine = [i for i in others if f.events[i].au in ev.prototype_aus(reading)]
        if mine:
            others = [i for i in others if i not in mine]
            parts.append(ph.pick("interp_cues_arc", cues=_cue_list(f, mine, ph), other=reading,
                                 verb="are" if _several(f, mine) else "is", spans=spans_text(spans)))
    if others:
        verb = "were" if _several(f, others) else "was"
        parts.append(ph.pick("interp_cues_outside" if fits else "interp_cues_none",
                             cues=_cue_list(f, others, ph), verb=verb, label=d.label))
    if not d.cite:
        parts.append(ph.pick("interp_no_cues", label=d.label, prob=f"{probs.get(d.label, d.conf):.2f}"))
    cited = {f.events[i].au: f.events[i] for i in d.cite}
    if d.label == "happiness" and "AU12" in cited:
        smile = cited["AU12"]
        cheeks = [e for e in f.events.values() if e.au == "AU06"
                  and e.start - ev.TIME_TOLERANCE_S <= smile.end and e.end + ev.TIME_TOLERANCE_S >= smile.start]
        parts.append(ph.pick("interp_duchenne" if cheeks else "interp_smile_no_duchenne"))
    if len(d.arc) > 1:
        seq = " -> ".join(
            f"{told(f.segments[i].label, d, f)} ({num(f.segments[i].start)}-{num(f.segments[i].end)} s"
            + (f", measured as {f.segments[i].label})" if told(f.segments[i].label, d, f) != f.segments[i].label
               else ")") for i in d.arc)
        parts.append(ph.pick("interp_sequence", sequence=seq))
    if d.alt and (alt := _alt_sentence(analysis, f, d, ph)):
        parts.append(alt)
    occ = ev.occluded_spans(t)
    if occ:
        parts.append(ph.pick("interp_occlusion", share=f"{ev.occluded_share(t):.0%}",
                             spans=spans_text(occ)))
    val, aro = ev.mean_affect(t)
    parts.append(ph.pick("interp_valence", valence=f"{val:+.2f}", arousal=f"{aro:+.2f}"))
    ctx = analysis.context
    if ctx.status == "ok" and ctx.scene:
        scene, score = max(ctx.scene.items(), key=lambda kv: kv[1])
        parts.append(ph.pick("interp_context", scene=scene, score=f"{score:.2f}"))
    return " ".join(parts)


def conclusion(track: Track, d: Decision) -> Conclusion:
    val, aro = ev.mean_affect(track)
    return Conclusion(label=d.label, confidence=round(min(max(d.conf, 0.0), 1.0), 2),
                      valence=round(min(max(val, -1.0), 1.0), 3),
                      arousal=round(min(max(aro, -1.0), 1.0), 3))


def _actions(f: FaceFacts, start: float, end: float, prefer: list[str], narrated: set[str],
             ph: Phrases, *, peak_by_end: bool = False) -> tuple[str, list[str]]:
    """Caption phrase for the strongest movements that start inside [start, end]
    (cited events first), each event narrated once per caption (a cheek raise in the
    crying and another in the laughter are two movements); and their ids. With
    `peak_by_end`, a movement must also peak by `end`: one that starts as the next
    stretch begins belongs to that stretch's sentence."""
    def inside(i: str) -> bool:
        e = f.events[i]
        return (start - ev.TIME_TOLERANCE_S <= e.start <= end
                and (not peak_by_end or e.apex <= end + ev.TIME_TOLERANCE_S))

    pool = [i for i in prefer if inside(i)]
    pool += [i for i in f.events_in(start, end) if i not in pool and inside(i)]
    chosen: list[str] = []
    for i in pool:
        au = f.events[i].au
        if i in narrated or au == "AU45" or any(f.events[j].au == au for j in chosen):
            continue
        chosen.append(i)
        if len(chosen) == CAPTION_ACTIONS:
            break
    narrated.update(chosen)
    return ph.listing([ph.action(f.events[i].au) for i in chosen]), chosen


def framed_arc(f: FaceFacts, d: Decision) -> list[str]:
    """The decision's arc, opened and closed by the face's resting stretches where the arc
    leaves them out: the caption tells the clip from its start to its end, so a face that
    rests for the first second and then smiles is told that way whoever decided the smile.
    A rest counts where it is the first (last) segment long enough to tell
    (`FaceFacts.story_segments`) and the arc tells nothing before (after) it."""
    ids = list(d.arc)
    story = f.story_segments()
    if not ids or not story:
        return ids
    first, last = f.segments[story[0]], f.segments[story[-1]]
    if (first.label == NEUTRAL and story[0] not in ids and f.segments[ids[0]].label != NEUTRAL
            and f.segments[ids[0]].start >= first.end - ev.TIME_TOLERANCE_S):
        ids.insert(0, story[0])
    if (last.label == NEUTRAL and story[-1] not in ids and f.segments[ids[-1]].label != NEUTRAL
            and f.segments[ids[-1]].end <= last.start + ev.TIME_TOLERANCE_S):
        ids.append(story[-1])
    return ids


def caption(analysis: Analysis, f: FaceFacts, d: Decision, ph: Phrases) -> list[CaptionSentence]:
    """FEC-Bench-style caption sentences, each with its span and evidence ids."""
    t = f.track
    narrated: set[str] = set()  # event ids already in a sentence
    out: list[CaptionSentence] = []

    def add(text: str, start: float, end: float, ids: list[str]) -> None:
        out.append(CaptionSentence(text=sentence(text), start=round(start, 2), end=round(end, 2),
                                   evidence=ids))

    if analysis.source.kind == "image" or t.n <= 1:
        acts, ids = _actions(f, t.start - 1.0, t.end + 1.0, d.cite, narrated, ph)
        text = ph.pick("caption_image", subject=ph.subject, state=ph.state(d.label))
        add(text + (ph.pick("caption_actions", actions=acts) if acts else "."), t.start, t.end,
            [*d.arc, *ids])
        return out
    arc_ids = framed_arc(f, d)
    arc = [f.segments[i] for i in arc_ids]
    if not arc:  # no segment at all: the whole track under the decided label
        add(ph.pick("caption_begin", subject=ph.subject, state=ph.state(d.label)) + ".",
            t.start, t.end, [])
        return out
    first, last = arc[0], arc[-1]
    acts, ids = _actions(f, first.start, first.start + 0.5 * (first.end - first.start), d.cite,
                         narrated, ph)
    begin = ph.pick("caption_begin", subject=ph.subject, state=ph.state(told(first.label, d, f)))
    add(begin + (ph.pick("caption_actions", actions=acts) if acts else "."), first.start, first.end,
        [arc_ids[0], *ids])
    if len(arc) == 1:
        s0, s1 = t.start + (t.end - t.start) / 3, t.start + 2 * (t.end - t.start) / 3
        acts, ids = _actions(f, s0, s1, d.cite, narrated, ph)
        add(ph.pick("caption_middle_steady_actions", actions=acts) if acts
            else ph.pick("caption_middle_steady"), s0, s1, ids)
        add(ph.pick("caption_end_same", subject=ph.subject, state=ph.state(told(last.label, d, f))) + ".",
            s1, t.end, [arc_ids[0]])
    else:
        for k, (sid, seg) in enumerate(zip(arc_ids[1:-1], arc[1:-1], strict=True)):
            acts, ids = _actions(f, seg.start - 0.5, seg.end, d.cite, narrated, ph, peak_by_end=True)
            key = "caption_middle" if k == 0 else "caption_then"
            text = ph.pick(key, subject=ph.subject, state=ph.state(told(seg.label, d, f)))
            add(text + (ph.pick("caption_actions", actions=acts) if acts else "."), seg.start,
                seg.end, [sid, *ids])
        acts, ids = _actions(f, last.start - 0.5, last.end, d.cite, narrated, ph)
        same = len(arc) >= 2 and told(arc[-2].label, d, f) == told(last.label, d, f)
        key = "caption_end_same" if same else ("caption_end" if len(arc) > 2 else "caption_middle")
        text = ph.pick(key, subject=ph.subject, state=ph.state(told(last.label, d, f)))
        add(text + (ph.pick("caption_actions", actions=acts) if acts else "."), last.start,
            last.end, [arc_ids[-1], *ids])
        if len(arc) == 2 and not same:
            add(ph.pick("caption_end_same", subject=ph.subject, state=ph.state(told(last.label, d, f))) + ".",
                max(last.start, last.end - (last.end - last.start) / 3), last.end, [arc_ids[-1]])
    occ = ev.occluded_spans(t)
    if occ:
        add(ph.pick("caption_occluded", spans=spans_text(occ)), occ[0][0], occ[-1][1], [])
    return out


def evidence_items(analysis: Analysis, track: Track, refs: list[str] | None = None) -> list[EvidenceItem]:
    """The segments and events behind an explanation (all of them when refs is None)."""
    f = ev.facts(analysis, track)
    items = [EvidenceItem(kind="segment", label=s.label, start=round(s.start, 3), end=round(s.end, 3),
                          peak_time=round(s.peak_time, 3), value=round(s.mean_prob, 3))
             for i, s in f.segments.items() if refs is None or i in refs]
    items += [EvidenceItem(kind="event", label=e.au, start=round(e.start, 3), end=round(e.end, 3),
                           peak_time=round(e.apex, 3), value=round(e.peak, 3))
              for i, e in f.events.items() if refs is None or i in refs]
    return items


def explanation(analysis: Analysis, track: Track, d: Decision, *, seed: int = 0,
                decided_by: str = "model", fallback_reason: str | None = None) -> Explanation:
    """The explanation of one face from its decision; the note is shown only if faithful."""
    f = ev.facts(analysis, track)
    ph = Phrases(analysis, track, seed)
    interp = interpretation(analysis, f, d, ph)
    withheld = []
    if d.note:
        problems = faithfulness.check_note(d.note, analysis, track, allowed_labels={d.label})
        if problems:
            withheld.append(f"the model's note {d.note!r} was withheld: {'; '.join(problems)}")
        else:
            interp += " " + sentence(d.note if d.note.endswith((".", "!", "?")) else d.note + ".")
    sents = caption(analysis, f, d, ph)
    refs = set(d.cite) | set(d.arc) | set(d.why) | {i for s in sents for i in s.evidence}
    return Explanation(
        track_id=track.track_id, key_observations=observations(f, d, ph), interpretation=interp,
        conclusion=conclusion(track, d), caption=" ".join(s.text for s in sents),
        caption_sentences=sents, evidence=evidence_items(analysis, track, sorted(refs)),
        decision=d.model_dump(), decided_by=decided_by, fallback_used=fallback_reason is not None,
        fallback_reason=fallback_reason, withheld=withheld)


# ------------------------------------------------------------------ answers
def answer(analysis: Analysis, track: Track, a: Answer, tool_results: dict[str, dict], *,
           seed: int = 0) -> tuple[str, list[str], list[float]]:
    """The reply to a follow-up: the model's sentence (if faithful), then one sentence per
    cited piece of evidence. Returns (text, withheld, times the answer is about)."""
    f = ev.facts(analysis, track)
    ph = Phrases(analysis, track, seed)
    facts_text, times = [], []
    for ref in a.ref:
        if ref in f.segments:
            s = f.segments[ref]
            acts, codes = _answer_actions(f, s.start, s.end, ph)
            key = "answer_segment_image" if track.n <= 1 else "answer_segment"
            facts_text.append(ph.one(key, start=num(s.start), end=num(s.end), subject=ph.subject,
                                     state=ph.state(s.label), label=s.label,
                                     prob=f"{s.mean_prob:.2f}", actions=acts))
            times.append(s.start)
        elif ref in f.events:
            e = f.events[ref]
            facts_text.append(ph.one("answer_event", au=e.au, name=e.name, start=num(e.start),
                                     end=num(e.end), peak=f"{e.peak:.1f}", apex=num(e.apex)))
            times.append(e.start)
        elif ref in tool_results:
            text, when = _tool_sentence(f, tool_results[ref], ph)
            facts_text.append(text)
            times += when
    withheld, lead = [], ""
    if a.note:
        # The emotions its sentence may name are those of the evidence it cites (or, citing
        # none, any of the face's segments); the record's own label proves nothing.
        allowed = {f.segments[r].label for r in a.ref if r in f.segments}
        allowed |= {lab for r in a.ref if r in tool_results for lab in tool_results[r].get("emotions", {})
                    if tool_results[r]["emotions"][lab] >= 0.2}
        problems = faithfulness.check_note(a.note, analysis, track, allowed_labels=allowed,
                                            scope=_scope(f, a, tool_results))
        if problems:
            withheld.append(f"the model's sentence {a.note!r} was withheld: {'; '.join(problems)}")
        else:
            lead = sentence(a.note if a.note.endswith((".", "!", "?")) else a.note + ".")
    if not facts_text and not lead:  # a sentence that says what is absent needs no second one
        facts_text.append(ph.one("answer_nothing", track=track.track_id))
    text = " ".join([lead, *facts_text]).strip()
    return text, withheld, times


def ref_spans(f: FaceFacts, refs: list[str], tool_results: dict[str, dict]) -> list[tuple[float, float]]:
    """(start, end) of each cited piece of evidence: a segment, an event or a tool result."""
    spans = []
    for r in refs:
        span = f.segments.get(r) or f.events.get(r)
        if span is not None:
            spans.append((span.start, span.end))
        elif "start" in tool_results.get(r, {}):
            spans.append((tool_results[r]["start"], tool_results[r]["end"]))
    return spans


def _scope(f: FaceFacts, a: Answer, tool_results: dict[str, dict]) -> tuple[float, float] | None:
    """The time span an answer is about, for checking the emotions its sentence names."""
    spans = ref_spans(f, a.ref, tool_results)
    if not spans:
        return None
    return min(s for s, _ in spans), max(e for _, e in spans)


def _answer_actions(f: FaceFacts, start: float, end: float, ph: Phrases) -> tuple[str, list[str]]:
    """The strongest movements of a stretch, each with its peak: only events that peak
    inside it (an event that merely touches its edge peaks, and is cited, elsewhere)."""
    tol = ev.TIME_TOLERANCE_S
    ids = [i for i in f.events_in(start, end)
           if f.events[i].au != "AU45" and start - tol <= f.events[i].apex <= end + tol]
    seen, chosen = set(), []
    for i in ids:
        if f.events[i].au not in seen:
            seen.add(f.events[i].au)
            chosen.append(i)
        if len(chosen) == CAPTION_ACTIONS:
            break
    if not chosen:
        return "", []
    codes = ", ".join(f"{f.events[i].au} {f.events[i].peak:.1f}" for i in chosen)
    return ph.one("answer_actions", actions=ph.listing([ph.action(f.events[i].au) for i in chosen]),
                  codes=codes), chosen


def _tool_sentence(f: FaceFacts, r: dict, ph: Phrases) -> tuple[str, list[float]]:
    """One sentence for a tool result (time_window/moment or compare_moments)."""
    t = f.track
    if "t1" in r:  # compare_moments
        changes = []
        for code, delta in sorted(r.get("au_change", {}).items(), key=lambda kv: -abs(kv[1]))[:3]:
            verb = "rises" if delta > 0 else "falls"
            changes.append(f"{code} ({AU_NAMES.get(code, code)}) {verb} by {abs(delta):.1f}")
        emo = r.get("emotion_change", {})
        if emo:
            lab, dv = max(emo.items(), key=lambda kv: abs(kv[1]))
            changes.append(f"{lab} {'gains' if dv > 0 else 'loses'} {abs(dv):.2f} in probability")
        if not changes:
            return ph.one("answer_compare_none", t1=num(r["t1"]), t2=num(r["t2"])), [r["t1"], r["t2"]]
        return ph.one("answer_compare", t1=num(r["t1"]), t2=num(r["t2"]),
                      changes=ph.listing(changes)), [r["t1"], r["t2"]]
    centre = r.get("at", (r["start"] + r["end"]) / 2)
    lab, prob = next(iter(r.get("emotions", {}).items()), ("no emotion reading", 0.0))
    occl = ""
    if r.get("occlusion", 0.0) >= ev.OCCLUDED:
        occl = ph.one("answer_window_occluded", occlusion=f"{r['occlusion']:.2f}")
    present = r.get("aus_present", {})
    strongest = sorted(((c, v) for c, v in present.items() if c != "AU45"), key=lambda kv: -kv[1])
    strongest = strongest[:CAPTION_ACTIONS]
    text = ""
    if strongest:
        acts = ph.one("answer_actions", actions=ph.listing([ph.action(c) for c, _ in strongest]),
                      codes=", ".join(f"{c} {v:.1f}" for c, v in strongest))
        text = ph.one("answer_window", time=num(centre), start=num(r["start"]), end=num(r["end"]),
                      label=lab, prob=f"{prob:.2f}", actions=acts, occluded=occl)
    else:
        text = ph.one("answer_window_none", time=num(centre), start=num(r["start"]), end=num(r["end"]),
                      label=lab, prob=f"{prob:.2f}", occluded=occl)
    if "note" in r:
        text += " " + ph.one("answer_not_visible", track=t.track_id, start=num(t.start), end=num(t.end))
    return text, [centre]
