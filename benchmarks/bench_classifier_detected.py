"""Crop classifiers on the crops they are given at prediction: one detector's own instances on a split
(matched one-to-one to the ground truth at mask IoU >= 0.5, labelled by their match; the same crops for
every classifier), each classifier's class accuracy alone and with the per-cell karyotype-aware
assignment. A quick way to choose among classifiers before a whole ``bench_shipped_model.py`` run.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_classifier_detected.py --detector mfish \\
        --classifiers mfish runs/clf/with_classifier.pt --gt datasets/mfish/val.json \\
        --md benchmarks/results/crop_classifier.md
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_markdown, commit, shown  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--detector", required=True, help="model whose instances are cropped (file or shipped name)")
    ap.add_argument("--classifiers", nargs="+", required=True, help="models whose crop classifier is measured")
    ap.add_argument("--gt", required=True, type=Path, help="a split's JSON (e.g. datasets/mfish/val.json)")
    ap.add_argument("--md", type=Path, help="append the table to this Markdown file")
    a = ap.parse_args(argv)

    import torch

    from chromoseg.engine.checkpoint import load_model
    from chromoseg.engine.crop_classifier import collect_detected_crops, joint_accuracy, predict_probs
    from chromoseg.weights import resolve_model

    data = collect_detected_crops(resolve_model(a.detector), a.gt)
    n = int(data["labels"].numel())
    rows = []
    for f in a.classifiers:
        clf = load_model(resolve_model(f)).crop_classifier
        if clf is None:
            raise SystemExit(f"{f}: that model has no crop classifier")
        with torch.no_grad():
            probs = predict_probs(clf.float(), data)
        rows.append((f, float((probs.argmax(1) == data["labels"]).float().mean()), joint_accuracy(probs, data)))
        print(f"{f}: {100 * rows[-1][1]:.1f}% right alone, {100 * rows[-1][2]:.1f}% with the assignment")
    lines = ["", f"### Crop classifiers on the detector's own instances, `{a.gt.name}` ({dt.date.today()}, commit {commit()})", "",
             f"- command: `{shlex.join(['python', 'benchmarks/bench_classifier_detected.py'] + [shown(x) for x in (argv or sys.argv[1:])])}`",
             f"- detector: `{shown(a.detector)}`; {n} of its instances match a chromosome of `{a.gt.name}` (mask IoU >= 0.5)",
             f"- hardware: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads", "",
             "| classifier | right class, alone | with the karyotype-aware assignment |", "|---|---|---|"]
    lines += [f"| `{shown(f)}` | {100 * r:.1f} % | {100 * j:.1f} % |" for f, r, j in rows]
    if a.md:
        append_markdown(a.md, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
