"""The module walk of ``chromoseg predict IMAGE`` (issue 28): how many chromoseg modules one real
prediction crosses and how often it comes back to one it has left.

One fresh Python process runs ``chromoseg predict IMAGE --out DIR --quiet`` (its defaults: the shipped
model of the image's stain, karyotype report, overlay, labels) under ``sys.setprofile``. Every Python
call whose code lies in a ``chromoseg.*`` module is an event; code run while a module is imported (a
``<module>`` frame and all it calls) is left out, so the walk is the prediction's, not the imports'.
From the calls, in order:

- ``modules``: the distinct chromoseg modules entered;
- ``crossings``: calls from one chromoseg module into another (a call within one module, or from
  torch, numpy, ... into chromoseg, is no crossing);
- ``returns``: the distinct crossings ``A -> B`` into a module ``B`` first entered before ``A`` was,
  i.e. the walk going back to an earlier module (a loop over the chromosomes that calls back each
  time counts once: it is one more place the reader has to go back to);
- ``first_entered``: the modules in the order the walk first enters them, and ``back_edges``, the
  returns themselves; ``back_edge_calls``: for each return, the functions that make it
  (``caller -> callee``, qualified names, with how many calls), i.e. where to look.

``--src DIR`` runs another checkout's ``src`` (e.g. a ``git worktree`` of an older commit) for a
before/after comparison; ``--markdown FILE`` appends the result as a section.

    python benchmarks/bench_predict_walk.py examples/cil-gband/103203.jpg
    python benchmarks/bench_predict_walk.py examples/cil-gband/103203.jpg --src BEFORE/src
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import REPO, append_markdown, commit, shown  # noqa: E402

EXAMPLE = REPO / "examples" / "cil-gband" / "103203.jpg"

CHILD = r"""
import json, sys
calls = []          # (caller's chromoseg module or None, its function, callee's module, its function), in order
stack = []          # per Python frame: (its chromoseg module, function) or None
importing = [0]     # depth of <module> frames (imports) the current frame runs under

def prof(frame, event, arg):
    if event == "call":
        code = frame.f_code
        if code.co_name == "<module>" or importing[0]:
            importing[0] += 1
            stack.append(None)
            return
        name = frame.f_globals.get("__name__", "")
        mod = (name, getattr(code, "co_qualname", code.co_name)) if name.startswith("chromoseg") else None
        if mod:
            caller = next((m for m in reversed(stack) if m is not None), (None, None))
            calls.append((*caller, *mod))
        stack.append(mod)
    elif event == "return":
        if stack:
            stack.pop()
        if importing[0]:
            importing[0] -= 1

from chromoseg.cli import main
sys.setprofile(prof)
try:
    main(["predict", {image!r}, "--out", {out!r}, "--quiet"])
    code = 0
except SystemExit as e:
    code = e.code
finally:
    sys.setprofile(None)
import chromoseg
print("RESULT " + json.dumps({{"exit": code, "calls": calls, "package": chromoseg.__file__}}))
"""


def walk(calls: list) -> dict:
    """The walk's numbers from the (caller module, caller function, callee module, callee function)
    calls, in order."""
    first: dict[str, int] = {}
    crossings, back, where = 0, {}, {}
    for caller, caller_fn, mod, fn in calls:
        first.setdefault(mod, len(first))
        if caller is None or caller == mod:
            continue
        crossings += 1
        if first[mod] < first[caller]:
            edge, by = f"{caller} -> {mod}", f"{caller_fn} -> {fn}"
            back[edge] = back.get(edge, 0) + 1
            where.setdefault(edge, {})
            where[edge][by] = where[edge].get(by, 0) + 1
    return {"modules": len(first), "crossings": crossings, "returns": len(back),
            "first_entered": sorted(first, key=first.get), "back_edges": back, "back_edge_calls": where}


def measure(image: Path, src: Path | None) -> dict:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(Path(src).resolve()) + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as tmp:
        code = CHILD.format(image=str(image), out=str(Path(tmp) / "out"))
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    line = next((ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"the child failed:\n{run.stderr[-3000:]}")
    res = json.loads(line[len("RESULT "):])
    out = walk(res["calls"])
    out["exit"], out["package"] = res["exit"], res["package"]
    return out


def markdown(image: Path, src: Path | None, r: dict) -> str:
    tree = Path(src).resolve().parent if src is not None else REPO
    cmd = "python benchmarks/bench_predict_walk.py " + shown(image) + (" --src BEFORE_CHECKOUT/src" if src else "")
    lines = [f"\n## Module walk of `chromoseg predict {image.name}` at {commit(tree)} "
             f"({datetime.date.today():%Y-%m-%d})\n", "", f"Command: `{cmd}` (exit status of the predict: {r['exit']}).",
             "", f"- chromoseg modules entered: **{r['modules']}**",
             f"- calls from one chromoseg module into another: {r['crossings']}",
             f"- returns to an earlier module (distinct `caller -> callee` crossings into a module entered "
             f"before the caller): **{r['returns']}**", "",
             "Modules in the order first entered: " + ", ".join(f"`{m}`" for m in r["first_entered"]), "",
             "Returns: " + ", ".join(f"`{k}` ({n}x)" for k, n in r["back_edges"].items()), ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image", nargs="?", default=str(EXAMPLE), help="image to predict (default: the G-band example)")
    ap.add_argument("--src", default=None, help="another checkout's src folder (before/after)")
    ap.add_argument("--markdown", default=None, help="append the result to this Markdown file")
    ap.add_argument("--json", action="store_true", help="print the whole result as JSON")
    args = ap.parse_args(argv)
    r = measure(Path(args.image), Path(args.src) if args.src else None)
    print(json.dumps(r, indent=1) if args.json else
          f"modules {r['modules']}, crossings {r['crossings']}, returns {r['returns']} (exit {r['exit']}; "
          f"chromoseg from {Path(r['package']).parent})")
    if args.markdown:
        append_markdown(args.markdown, markdown(Path(args.image), Path(args.src) if args.src else None, r))


if __name__ == "__main__":
    main()
