"""Training throughput of ``chromoseg train`` (images/s of whole epochs: data, forward, backward,
SGD), this tree against another checkout (e.g. the commit before a speed-up, as a git worktree).

Each run is a real ``chromoseg train`` on the first ``--images`` M-FISH training images for
``--epochs`` epochs without validation; the last epoch's ``train/images_per_s`` (from
``metrics.jsonl``) is the run's figure, so one-off costs (model build, the first decode of each
image) stay out. Trees, variants and sizes are run in turn, ``--repeats`` times; the fastest run of
each is reported (the machine may be shared: the fastest is the least disturbed).

    git worktree add /tmp/chromoseg-base 1b2dd35
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_train.py --base /tmp/chromoseg-base \\
        --variants mr rmr ermr --sizes 480x384 640x512 --out benchmarks/results/training_speed.md
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_markdown, commit, shown  # noqa: E402


def run_once(tree: Path, variant: str, size: str, a, work: Path, extra: tuple[str, ...] = ()) -> float | None:
    out = work / f"{tree.name}-{variant}-{size}-{time.time_ns()}"
    env = dict(os.environ, PYTHONPATH=str(tree / "src"), OMP_NUM_THREADS=str(a.threads))
    cmd = [sys.executable, "-m", "chromoseg.cli", "train", "--train", str(a.data), "--variant", variant,
           "--backbone", a.backbone, "--image-size", size, "--epochs", str(a.epochs), "--max-images", str(a.images),
           "--batch-size", "2", "--workers", "0", "--device", "cpu", "--warmup-iters", "1", "--out", str(out),
           "--no-progress"] + (["--compact"] if a.compact else []) + list(extra)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"{tree.name} {variant} {size}: failed\n{r.stderr[-2000:]}", file=sys.stderr)
        return None
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    ips = [x["train/images_per_s"] for x in recs if "train/images_per_s" in x]
    return ips[-1] if ips else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, default=None, help="another checkout to compare with (its src/ is used)")
    ap.add_argument("--variants", nargs="+", default=["mr", "rmr", "ermr"])
    ap.add_argument("--sizes", nargs="+", default=["480x384", "640x512"], help="WxH")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--compact", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--images", type=int, default=12, help="training images per epoch (default 12)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per run; the last one is measured (default 2)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=REPO / "datasets" / "mfish" / "train.json")
    ap.add_argument("--out", type=Path, default=None, help="Markdown file to append the table to")
    ap.add_argument("--also", default=None, metavar="ARGS",
                    help="also run this tree with these extra train options (one string, e.g. "
                         "'--trainable-layers 3'): an extra column")
    a = ap.parse_args(argv)
    # configurations: (tree, extra train options); all alternate within each repeat
    trees = [(REPO, ())] + ([(a.base.resolve(), ())] if a.base else [])
    if a.also:
        trees.append((REPO, tuple(a.also.split())))
    best: dict[tuple, float] = {}
    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(a.repeats):
            for size in a.sizes:
                for v in a.variants:
                    for tree in trees:  # alternating: all configurations see the same load
                        ips = run_once(tree[0], v, size, a, Path(tmp), tree[1])
                        print(f"repeat {rep + 1}: {tree[0].name} {' '.join(tree[1])} {v} {size}: {ips}", flush=True)
                        if ips is not None:
                            key = (tree, v, size)
                            best[key] = max(best.get(key, 0.0), ips)
    names = {trees[0]: f"this tree ({commit(REPO)})"}
    if a.base:
        names[trees[1]] = f"base ({commit(trees[1][0])})"
    if a.also:
        names[trees[-1]] = f"this tree `{a.also}`"
    extra_cols = [t for t in trees[2:]] if a.base else []
    head = (["variant", "size"] + [f"{names[t]} images/s" for t in trees] + (["speed-up"] if a.base else [])
            + [f"{names[t]} speed-up" for t in extra_cols])
    lines = [f"## {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC: `chromoseg train` throughput", "",
             "```", f"OMP_NUM_THREADS={a.threads} .venv/bin/python benchmarks/bench_train.py "
             + " ".join(argv if argv is not None else sys.argv[1:]), "```", "",
             f"Hardware: {platform.processor() or platform.machine()} CPU, {a.threads} threads, no GPU. Data: the first "
             f"{a.images} images of `{shown(a.data)}` (augmentation on), batch 2, workers 0, {a.backbone}"
             f"{' --compact' if a.compact else ''}; figure = images/s of epoch {a.epochs} (of {a.epochs}), the "
             f"fastest of {a.repeats} runs, trees alternating. Wall time {time.time() - t_start:.0f} s.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for size in a.sizes:
        for v in a.variants:
            vals = [best.get((t, v, size)) for t in trees]
            row = [v, size] + [f"{x:.3f}" if x else "failed" for x in vals]
            if a.base:
                for x in [vals[0]] + vals[2:]:
                    row.append(f"{x / vals[1]:.2f}x" if x and vals[1] else "-")
            lines.append("| " + " | ".join(row) + " |")
    for size in a.sizes:
        m, e = best.get((trees[0], "mr", size)), best.get((trees[0], "ermr", size))
        if m and e:
            lines.append(f"\nThis tree, {size}: ermr's step time is {m / e:.2f}x mr's.")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        append_markdown(a.out, "\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
