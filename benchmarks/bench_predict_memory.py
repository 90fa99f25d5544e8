"""Peak memory and time of ``chromoseg predict`` on one image upscaled to camera sizes (issue 28).

A shipped example is upscaled (bilinear) to each size; each size is predicted in a fresh Python
process (``chromoseg predict IMAGE --out DIR --quiet``, its defaults: the shipped model of the image's
stain, karyotype report, overlay, labels), which reports its peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``), its wall and CPU time, the instances found and the
karyotype summary. ``--src DIR`` runs another checkout's ``src`` (e.g. a worktree of an older
commit) for a before/after comparison; ``--no-limit`` lifts ``MAX_IMAGE_PIXELS`` for the run.

    python benchmarks/bench_predict_memory.py --sizes 645x517 2500x2500 4000x3206
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "adir-mfish" / "V17__XY" / "V1701XYD.tif"

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import chromoseg.engine.predict as P
if {no_limit}:
    P.MAX_IMAGE_PIXELS = 10 ** 12
    try:  # the limit's home since the per-image pipeline (issue 28)
        import chromoseg.engine.pipeline as Q
        Q.MAX_IMAGE_PIXELS = 10 ** 12
    except ImportError:
        pass
from chromoseg.cli import main
try:
    main(["predict", {image!r}, "--out", {out!r}, "--quiet"])
except SystemExit as e:
    code = e.code
else:
    code = 0
wall = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_SELF)
print("RESULT " + json.dumps({{"exit": code, "wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime,
                               "peak_rss_gb": ru.ru_maxrss * 1024 / 1e9, "file": P.__file__}}))
"""


def upscaled(image: Path, size: tuple[int, int], out: Path) -> Path:
    import cv2

    from chromoseg.data.io import read_image

    arr = read_image(image)
    w, h = size
    big = arr if (h, w) == arr.shape else cv2.resize(arr, (w, h), interpolation=cv2.INTER_LINEAR)
    path = out / f"{image.stem}_{w}x{h}.png"
    cv2.imwrite(str(path), big)
    return path


def measure(path: Path, out: Path, src: Path | None, no_limit: bool) -> dict:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(Path(src) / "src")
    code = CHILD.format(image=str(path), out=str(out), no_limit=no_limit)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if not line:
        raise RuntimeError(f"the measurement failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    res = json.loads(line[-1][7:])
    try:
        meta = json.loads((out / "images.json").read_text())["images"]
        res["instances"] = meta[0]["instances"] if meta else None
        res["summary"] = meta[0].get("summary") if meta else None
    except (OSError, ValueError, KeyError):
        res["instances"] = res["summary"] = None
    problems = out / "problems.json"
    if res["instances"] is None and problems.exists():
        res["problem"] = problems.read_text()[:300]
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, default=EXAMPLE, help="the image to upscale (default: the shipped M-FISH example)")
    ap.add_argument("--sizes", nargs="+", default=["645x517", "2500x2500", "4000x3206"], help="WxH")
    ap.add_argument("--src", type=Path, default=None, help="another checkout to run (its src/ on PYTHONPATH)")
    ap.add_argument("--no-limit", action="store_true", help="lift MAX_IMAGE_PIXELS for the run")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for s in args.sizes:
            w, h = (int(v) for v in s.lower().split("x"))
            path = upscaled(args.image, (w, h), tmp)
            res = {"size": f"{w}x{h}", "mp": round(w * h / 1e6, 2),
                   **measure(path, tmp / f"out_{w}x{h}", args.src, args.no_limit)}
            rows.append(res)
            print(json.dumps(res), flush=True)
    print("| image | pixels | peak memory | wall time | CPU time | instances | summary |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['mp']} MP | {r['peak_rss_gb']:.2f} GB | {r['wall_s']:.1f} s | {r['cpu_s']:.1f} s | "
              f"{r['instances']} | {r['summary']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
