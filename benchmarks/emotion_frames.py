"""The emotion CNN and the fused reading against the hand-coded real frames.

    python benchmarks/emotion_frames.py [--json OUT]

Takes the frames of tests/data/aus_frames.json whose `expression` names one
emotion (rest = neutral, smiles and laughter = happiness, crying = sadness, the
posed photos their own; the hand-over-face frames are left out), finds the coded
face as benchmarks/aus_frames.py does, and reports for each frame the CNN's
argmax on the aligned crop (tools.emotion) and the fused label of the pipeline
(`tools.analyze`), then a confusion table (scikit-learn) and each class's share
right where the CNN names it. This is the CNN's per-class reliability on what can
be checked here (docs/emotion.md). Not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.aus_frames import coded_face, load_coded  # noqa: E402

# tools.emotion_cnn's output order (FER2013) in this project's label names
CNN_LABELS = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
EXPRESSION = {
    "rest": "neutral", "smile onset": "happiness", "smile": "happiness", "slight smile": "happiness",
    "broad smile": "happiness", "laughing": "happiness", "smile offset": "happiness",
    "crying": "sadness", "posed surprise": "surprise", "posed happiness": "happiness",
    "posed anger": "anger", "posed disgust": "disgust",
}


def main(argv: list[str] | None = None) -> None:
    from sklearn.metrics import confusion_matrix

    from tools import analyze, assets, emotion
    from tools.video import Media

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write every row here")
    args = ap.parse_args(argv)
    frames = [f for f in load_coded()["frames"] if f["expression"] in EXPRESSION]
    rows = []
    for name in dict.fromkeys(f["media"] for f in frames):  # media in file order, each once
        analysis = analyze(assets.media(name), progress=None)
        wanted = {}
        for f in (f for f in frames if f["media"] == name):
            hit = coded_face(analysis, f)
            if hit is not None:
                wanted.setdefault(int(hit[0].frame_index[hit[1]]), []).append((f, *hit))
        with Media(assets.media(name)) as m:
            for k, fr in enumerate(m.frames()):
                for f, tr, i in wanted.get(k, []):
                    p = emotion.get_cnn().predict(emotion.align_crop(fr.rgb, tr.landmarks[i])[None])[0]
                    fused = analysis.emotion_labels[int(np.argmax(tr.emotions[i]))]
                    rows.append({"id": f["id"], "split": f["split"], "true": EXPRESSION[f["expression"]],
                                 "cnn": CNN_LABELS[int(p.argmax())], "cnn_p": round(float(p.max()), 3),
                                 "fused": fused})
                if k >= max(wanted, default=-1):
                    break
    for r in rows:
        print(f"{r['id']:<32} {r['true']:<10} cnn {r['cnn']:<10} ({r['cnn_p']:.2f})  fused {r['fused']}")
    labels = [c for c in CNN_LABELS if any(r["true"] == c or r["cnn"] == c for r in rows)]
    cm = confusion_matrix([r["true"] for r in rows], [r["cnn"] for r in rows], labels=labels)
    print("\nCNN confusion (rows: coded, columns: CNN)\n")
    print("| coded \\ CNN | " + " | ".join(labels) + " |\n|---|" + "---|" * len(labels))
    for lab, line in zip(labels, cm, strict=True):
        print(f"| {lab} | " + " | ".join(str(v) for v in line) + " |")
    right = np.diag(cm).sum()
    print(f"\nCNN right on {right} of {len(rows)}; fused right on "
          f"{sum(r['true'] == r['fused'] for r in rows)} of {len(rows)}")
    for j, lab in enumerate(labels):
        named = cm[:, j].sum()
        if named:
            print(f"  CNN says {lab}: right {cm[j, j]} of {named}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
