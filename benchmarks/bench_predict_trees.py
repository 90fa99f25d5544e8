"""One model file, two checkouts: images/s of a whole ``Predictor`` call (model, inference rule, crop
classifier, assignment) on the shipped example, this tree against a base tree (a git worktree),
alternating in one run, fastest of ``--reps`` per tree.

    git worktree add --detach /tmp/chromoseg-before <commit>
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_predict_trees.py --base /tmp/chromoseg-before \\
        --model src/chromoseg/weights/mfish_ermr_r18.safetensors --md benchmarks/results/predict_speed.md
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_markdown, commit, shown  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "adir-mfish" / "V17__XY" / "V1701XYD.tif"

_ONE = """
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[3]))
from chromoseg.data.io import read_image
from chromoseg.engine.predict import InferenceConfig, Predictor
pred = Predictor.from_checkpoint(sys.argv[1], InferenceConfig(score=None, score_threshold=None, classes=None))
if sys.argv[4] != "default":  # --amp: a tree from before InferenceConfig.amp has fp32 only
    pred.cfg.amp = sys.argv[4]
img = read_image(sys.argv[2])
out = pred([img])[0]
t0 = time.perf_counter(); out = pred([img])[0]
print(json.dumps({"seconds": time.perf_counter() - t0, "instances": len(out)}))
"""


def run(tree: Path, model: str, threads: int, amp: str = "default") -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"), OMP_NUM_THREADS=str(threads))
    res = subprocess.run([sys.executable, "-c", _ONE, model, str(EXAMPLE), str(threads), amp], env=env,
                         capture_output=True, text=True, cwd=tree)
    if res.returncode:
        raise SystemExit(f"{tree}: {res.stderr[-1500:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the other checkout (e.g. a git worktree of an earlier commit)")
    ap.add_argument("--model", required=True, help="model file (the same for both trees)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--md", default=None)
    ap.add_argument("--amp", default="default", choices=["default", "auto", "off", "bf16"],
                    help="this tree's InferenceConfig.amp (default: its own default); the base keeps its own")
    a = ap.parse_args(argv)
    model = str(Path(a.model).resolve())
    trees = {"this tree": REPO, "base": Path(a.base).resolve()}
    got = {k: [] for k in trees}
    for _ in range(a.reps):
        for k, t in trees.items():
            got[k].append(run(t, model, a.threads, a.amp if k == "this tree" else "default"))
            print(k, got[k][-1], flush=True)
    best = {k: min(r["seconds"] for r in v) for k, v in got.items()}
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    args = list(argv if argv is not None else sys.argv[1:])
    args = ["WORKTREE" if x == a.base else x for x in args]  # no path of this machine in the results
    cmd = "OMP_NUM_THREADS=%d .venv/bin/python benchmarks/bench_predict_trees.py %s" % (
        a.threads, shlex.join(args).replace(str(Path.home()), "~"))
    text = "\n".join([
        f"\n### A whole Predictor call, this tree ({commit()}) against {commit(trees['base'])}", "",
        f"- command: `{cmd}`",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {cpu}, {a.threads} threads, no GPU; "
        f"WORKTREE: a git worktree of {commit(trees['base'])}",
        f"- model file: `{Path(a.model).name}` (the same file in both trees, its recommended settings); input: "
        f"{shown(EXAMPLE)}; fastest of {a.reps} runs per tree after a warm-up call, trees alternating; this tree's "
        f"`amp`: {a.amp} (its default is `auto`: bf16 autocast on a CPU with bf16 instructions, as this one has)", "",
        "| tree | s / image | images / s | instances |", "|---|---|---|---|",
        *[f"| {k} ({commit(trees[k])}) | {best[k]:.3f} | {1 / best[k]:.2f} | {got[k][-1]['instances']} |" for k in trees],
        "", f"Speed-up {best['base'] / best['this tree']:.2f}x.", ""])
    print(text)
    if a.md:
        append_markdown(a.md, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
