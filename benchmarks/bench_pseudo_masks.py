"""How good are pseudo-masks (``chromoseg data pseudo-masks``) where the truth is known?

For each set with masks, every instance's axis-aligned box is derived from its mask, pseudo-masks are
made from the boxes alone and compared with the masks (per-instance IoU). Sets: M-FISH DAPI (its
polarity flipped: bright on dark is the G-band case upside down, the method inverts G-band first),
BioImLab Q-band, and the G-band karyogram-pair instances (`chromoseg data build-from-karyograms`; note
that the builder refines its masks against the metaphase's Otsu foreground, so this row is not fully
independent of a threshold method).

    python benchmarks/bench_pseudo_masks.py --set mfish=datasets/mfish/test.json:fluorescence \\
        --set bioimlab=datasets/bioimlab/test.json:fluorescence --set karyogram-pairs=datasets/kp/annotations.json:brightfield

appends a section to benchmarks/results/pseudo_masks.md.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time

from _results import REPO, append_markdown, commit, shown


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", action="append", required=True, metavar="NAME=JSON:STAIN",
                    help="a set with masks and its stain (fluorescence or brightfield); repeatable")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images of each set")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "pseudo_masks.md"))
    args = ap.parse_args(argv)
    from chromoseg.data.pseudo_masks import measure_pseudo_masks

    rows = []
    for spec in args.set:
        name, rest = spec.split("=", 1)
        path, stain = rest.rsplit(":", 1)
        t0 = time.perf_counter()
        r = measure_pseudo_masks(path, dark=stain == "brightfield", limit=args.limit, progress=False)
        rows.append((name, shown(path), stain, r, time.perf_counter() - t0))
        print(name, r, flush=True)
    cmd = "python benchmarks/bench_pseudo_masks.py " + " ".join(
        f"--set {n}={p}:{s}" for n, p, s, _, _ in rows) + (f" --limit {args.limit}" if args.limit else "")
    lines = [f"\n## {datetime.date.today().isoformat()} · commit {commit()}\n",
             f"Command: `{cmd}`  \nMachine: {platform.processor() or platform.machine()}, Python "
             f"{sys.version.split()[0]}; defaults of `chromoseg.data.pseudo_masks.pseudo_masks`.\n",
             "| set | file | polarity | images | instances | mean IoU | IoU >= 0.5 | IoU >= 0.75 | s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, p, stain, r, sec in rows:
        lines.append(f"| {name} | `{p}` | {stain} | {r['images']} | {r['instances']} | {r['mean_iou']:.3f} | "
                     f"{100 * r['iou_ge_0.5']:.1f}% | {100 * r['iou_ge_0.75']:.1f}% | {sec:.0f} |")
    append_markdown(args.out, "\n".join(lines) + "\n")
    print(f"appended to {shown(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
