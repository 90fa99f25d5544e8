"""Issue 27's aims for ``chromoseg review``: "the page opens in under 2 s for a folder of 100 metaphases"
and "an edit is saved in under 200 ms".

Builds a predict folder of 100 metaphases in a temporary folder by replicating an existing predict
output (``--src``, default the 75 CIL validation metaphases of ``out/bench-gband-e3-val/cil-as-is``,
cycled; each copy its own image file, so nothing is shared between metaphases), starts
``chromoseg review DIR --no-browser`` in a subprocess (a real uvicorn server on 127.0.0.1), and times:

* **start**: from starting the command to its printed address (Python, imports, reading the folder);
* **page open** in headless Chromium (Playwright, where installed): from ``goto`` of the printed address
  to the batch list shown (all its metaphases listed), and to the first metaphase shown with its
  outlines, the karyogram picture loaded and its layout drawn - cold (first load after start: nothing
  cached) and again after a reload, and the next metaphase (N); with the CPU time the server and
  Chromium (every process under this one but the server) spent meanwhile: on a busy machine, what the
  open would take on idle cores (an upper bound where the two overlap);
* **the page's requests in-process** (Starlette's test client, no HTTP, no browser, no warm-up): each
  request's wall and CPU time, cold and again (``--profile``: instead, only print a CPU profile of the
  server's work for a cold open);
* **the page's requests** one after the other with ``urllib`` (cold), the browser sends the last
  three together;
* **edit saved**: ``POST /api/images/{id}/edit`` (a class change) until its answer (the edit written to
  ``review.json`` with fsync, the new metaphase view returned) - first with one metaphase edited, then
  after an edit on every one of the 100 (``review.json`` then holds all of them); and the karyogram
  of the edited metaphase, rendered afresh after each edit (what the page shows next, not part of
  saving).

``--src`` defaults to the CIL validation predictions where this machine has them; elsewhere (or with
``--src examples``) the shipped examples (``examples/cil-gband``, ``examples/adir-mfish``) are predicted
once with ``chromoseg predict`` into the temporary folder and cycled.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_review_speed.py --md benchmarks/results/review_speed.md
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import REPO, append_markdown, commit, shown  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"
#: how often the page is checked for what it shows (ms; Playwright's default, every animation frame,
#: costs Chromium CPU for as long as the page waits for the server)
POLL_MS = 50


def predict_examples(out: Path) -> list[Path]:
    """Predict the shipped examples (one G-band, one M-FISH DAPI metaphase) with ``chromoseg predict``
    (the shipped models) into ``out/examples-*``; the two predict folders."""
    exe = Path(sys.executable).with_name("chromoseg")
    srcs = []
    for name, image in (("gband", REPO / "examples/cil-gband/103203.jpg"),
                        ("mfish", REPO / "examples/adir-mfish/V17__XY/V1701XYD.tif")):
        dst = out / f"examples-{name}"
        subprocess.run([str(exe), "predict", str(image), "--out", str(dst), "--device", "cpu", "--quiet"],
                       check=True, stdout=subprocess.DEVNULL)
        srcs.append(dst)
    return srcs


def make_folder(srcs: list[Path], out: Path, n: int) -> Path:
    """``out/pred``: a predict folder of ``n`` metaphases replicated from the predict folders ``srcs``
    (their metaphases cycled, images copied)."""
    images, by_file, meta = [], {}, None
    for src in srcs:
        m = json.loads((src / "images.json").read_text())
        meta = m if meta is None else meta
        images += m["images"] if isinstance(m, dict) else m
        for r in json.loads((src / "results.json").read_text()):
            by_file.setdefault(str(r["file_name"]), []).append(r)
    pred, imdir = out / "pred", out / "images"
    pred.mkdir(parents=True)
    imdir.mkdir()
    new_images, new_results = [], []
    for k in range(n):
        im = images[k % len(images)]
        f = Path(im["file_name"])
        dst = imdir / f"m{k:03d}_{f.name}"
        shutil.copyfile(f, dst)
        new_images.append(dict(im, id=k + 1, file_name=str(dst), stem=dst.stem))
        for r in by_file.get(str(f), []):
            new_results.append(dict(r, image_id=k + 1, file_name=str(dst)))
    (pred / "images.json").write_text(json.dumps(dict(meta, images=new_images) if isinstance(meta, dict) else new_images))
    (pred / "results.json").write_text(json.dumps(new_results))
    return pred


def call(base: str, path: str, body=None) -> tuple[float, bytes]:
    req = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                 headers={"X-Chromoseg-Token": TOKEN, "Content-Type": "application/json"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as resp:
        data = resp.read()
    return time.perf_counter() - t, data


#: the server's CPU seconds from its start to its printed address, by process id
start_cpu: dict[int, float] = {}


def start_server(pred: Path) -> tuple[subprocess.Popen, str, float]:
    exe = Path(sys.executable).with_name("chromoseg")
    cmd = [str(exe), "review", str(pred), "--no-browser", "--port", "0", "--token", TOKEN, "--user", "bench"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        m = re.search(r"open (http://\S+?)/\?token=", line)
        if m:
            start_cpu[proc.pid] = cpu_s(proc.pid)
            return proc, m.group(1), time.perf_counter() - t0
    raise SystemExit("the review server did not start: " + (proc.stdout.read() if proc.stdout else ""))


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux ``/proc``; NaN elsewhere)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def tree_cpu(root: int, exclude: int) -> float:
    """CPU seconds used so far by the processes under ``root`` (children, grandchildren...), leaving out
    ``exclude`` and what is under it: here Playwright's driver and Chromium's processes."""
    parent, cpu = {}, {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            f = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(d.name)] = int(f[1])
        cpu[int(d.name)] = sum(int(v) for v in f[11:15]) / os.sysconf("SC_CLK_TCK")  # own + reaped children
    total = 0.0
    for pid, c in cpu.items():
        p = pid
        while p in parent and p not in (root, exclude, 0, 1):
            p = parent[p]
        if p == root and pid != root:
            total += c
    return total


def in_process(pred: Path) -> dict:
    """The page's requests through Starlette's test client in this process (no HTTP, no browser, no
    warm-up): each request's wall and CPU time (this process's, all its threads), cold, then again."""
    from starlette.testclient import TestClient

    from chromoseg.review.app import create_app

    t, c = time.perf_counter(), time.process_time()
    app = create_app(pred, token=TOKEN, user="bench")
    out = {"read": (time.perf_counter() - t, time.process_time() - c), "cold": {}, "again": {}}
    with TestClient(app, headers={"X-Chromoseg-Token": TOKEN}) as client:
        first = None
        for what in ("cold", "again"):
            for path in ("/", "/static/app.js", "/api/batch", "/api/images/{id}", "/api/images/{id}/image.png",
                         "/api/images/{id}/karyogram.png?v=0&straight=1",
                         "/api/images/{id}/karyogram.json?v=0&straight=1"):
                t, c = time.perf_counter(), time.process_time()
                r = client.get(path.replace("{id}", str(first)))
                out[what][path] = (time.perf_counter() - t, time.process_time() - c)
                assert r.status_code == 200, (path, r.text[:200])
                if path == "/api/batch":
                    first = r.json()["images"][0]["id"]
    return out


def profile(pred: Path, top: int = 30) -> None:
    """Print where the CPU of a cold page open goes: the server's work for it (reading the folder, the
    batch list, the first metaphase's view, picture and straightened karyogram) called directly in
    this fresh process under cProfile, cumulative CPU (``time.process_time``) first."""
    import cProfile
    import pstats

    prof = cProfile.Profile(time.process_time)
    prof.enable()
    from chromoseg.review.app import create_app

    app = create_app(pred, token=TOKEN, user="bench")
    r = app.state.renderer
    first = r.batch()[0]["id"]
    r.view(first)
    r.image_png(first)
    r.karyogram(first)
    prof.disable()
    pstats.Stats(prof).sort_stats("cumulative").print_stats(top)


def stats(xs: list[float]) -> str:
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]
    return f"median {1000 * statistics.median(xs):.0f} ms, p90 {1000 * p90:.0f} ms, max {1000 * xs[-1]:.0f} ms (n={len(xs)})"


def browser_times(url_with_token: str, pid: int, n_images: int) -> dict | None:
    chromium = os.environ.get("CHROMOSEG_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not Path(chromium).is_file():
        return None
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
    out = {}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True, args=args, timeout=120_000)
        try:
            page = b.new_page(viewport={"width": 1400, "height": 900})

            def shown_fully():
                page.wait_for_function(
                    "() => document.querySelectorAll('g.chrom').length > 0 && "
                    "document.querySelectorAll('#ksvg rect.kp').length > 0 && "
                    "document.getElementById('karyogram').complete && "
                    "document.getElementById('karyogram').naturalWidth > 0 && "
                    "!document.getElementById('kwrap').classList.contains('stale')", timeout=120_000,
                    polling=POLL_MS)

            me = os.getpid()

            def batch_shown():
                page.wait_for_function(f"() => document.querySelectorAll('#batch li').length >= {n_images}",
                                       timeout=120_000, polling=POLL_MS)

            for what, go in (("cold", lambda: page.goto(url_with_token, wait_until="commit")),
                             ("reload", lambda: page.reload(wait_until="commit"))):
                t, c, cb = time.perf_counter(), cpu_s(pid), tree_cpu(me, pid)
                go()
                batch_shown()
                out[what + "_batch"] = time.perf_counter() - t
                out[what + "_batch_cpu"] = cpu_s(pid) - c
                out[what + "_batch_browser_cpu"] = tree_cpu(me, pid) - cb
                shown_fully()
                out[what] = time.perf_counter() - t
                out[what + "_cpu"] = cpu_s(pid) - c
                out[what + "_browser_cpu"] = tree_cpu(me, pid) - cb
                out[what + "_server_total_cpu"] = cpu_s(pid)  # all the server's CPU since its command started
            out["batch_items"] = page.locator("#batch li").count()
            first = page.evaluate("() => location.hash")
            t, c = time.perf_counter(), cpu_s(pid)
            page.keyboard.press("n")
            page.wait_for_function(f"() => location.hash !== {json.dumps(first)}", timeout=120_000)
            page.wait_for_function("() => document.querySelector('#batch li.current') !== null", timeout=120_000)
            page.wait_for_timeout(50)
            shown_fully()
            out["next"] = time.perf_counter() - t
            out["next_cpu"] = cpu_s(pid) - c
        finally:
            b.close()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", default=None,
                    help="a predict output folder to replicate, or 'examples': the shipped examples predicted "
                         "here (default: out/bench-gband-e3-val/cil-as-is where it exists, else 'examples')")
    ap.add_argument("-n", type=int, default=100, help="metaphases in the folder (default 100)")
    ap.add_argument("--edits", type=int, default=20, help="timed edits in each condition")
    ap.add_argument("--md", type=Path, help="append the results to this Markdown file")
    ap.add_argument("--profile", action="store_true", help="only print a CPU profile of the server's work for a "
                    "cold page open (in this process, no server, nothing appended)")
    ap.add_argument("--open-only", action="store_true", help="only the server start and the page open in "
                    "headless Chromium (no in-process, urllib or edit timings)")
    ap.add_argument("--date", default=None)
    ap.add_argument("--hardware", default=None)
    a = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="chromoseg-review-bench-"))
    lines = []
    try:
        default = REPO / "out/bench-gband-e3-val/cil-as-is"
        if a.src is None:
            a.src = str(default) if (default / "results.json").is_file() else "examples"
        srcs = predict_examples(tmp) if a.src == "examples" else [Path(a.src)]
        src_shown = ("the shipped examples (`examples/cil-gband/103203.jpg`, `examples/adir-mfish/V17__XY/"
                     "V1701XYD.tif`) predicted with `chromoseg predict`" if a.src == "examples"
                     else f"`{shown(Path(a.src))}`")
        pred = make_folder(srcs, tmp, a.n)
        n_inst = len(json.loads((pred / "results.json").read_text()))
        if a.profile:
            profile(pred)
            return 0
        if a.open_only:
            proc, base, t_start = start_server(pred)
            try:
                bt = browser_times(base + "/?token=" + TOKEN, proc.pid, a.n)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            print(f"server start {t_start:.2f} s, server CPU to the address {start_cpu.get(proc.pid, float('nan')):.2f} s")
            for k, v in (bt or {}).items():
                print(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}")
            return 0
        ip = in_process(pred)
        proc, base, t_start = start_server(pred)
        first_pid = proc.pid
        try:
            # the page's requests, cold, in order
            req_times = {}
            t_all = time.perf_counter()
            for path in ("/", "/static/app.css", "/static/app.js", "/api/batch"):
                req_times[path], data = call(base, path)
            first = json.loads(data)["images"][0]["id"]
            for path in (f"/api/images/{first}", f"/api/images/{first}/image.png",
                         f"/api/images/{first}/karyogram.png?v=0&straight=1",
                         f"/api/images/{first}/karyogram.json?v=0&straight=1"):
                req_times[path.replace(str(first), "{id}")], _ = call(base, path)
            t_seq = time.perf_counter() - t_all
            proc.terminate()
            proc.wait(timeout=30)
            # the browser, on a fresh server (nothing cached but what it warms up as it starts), opened at once
            # as `chromoseg review` opens it
            proc, base, _ = start_server(pred)
            bt = browser_times(base + "/?token=" + TOKEN, proc.pid, a.n)
            # edits
            _, data = call(base, f"/api/images/{first}")
            version = json.loads(data)["version"]
            insts = json.loads(data)["instances"]
            target = insts[0]["id"]

            def edits(iid, version, k):
                times, kg = [], []
                for j in range(k):
                    c = cpu_s(proc.pid)
                    dt, data = call(base, f"/api/images/{iid}/edit",
                                    {"version": version, "op": "class", "id": target_of[iid], "category_id": 1 + j % 24})
                    cpu_edit.append(cpu_s(proc.pid) - c)
                    version = json.loads(data)["version"]
                    times.append(dt)
                    c = cpu_s(proc.pid)
                    dk, _ = call(base, f"/api/images/{iid}/karyogram.png?v={version}&straight=1")
                    cpu_kg.append(cpu_s(proc.pid) - c)
                    kg.append(dk)
                return version, times, kg

            cpu_edit, cpu_kg = [], []

            target_of = {first: target}
            version, t_one, kg_one = edits(first, version, a.edits)
            cpu_one, cpu_edit = cpu_edit, []
            _, data = call(base, "/api/batch")
            ids = [im["id"] for im in json.loads(data)["images"]]
            t_fill = []
            for iid in ids:  # one edit on every metaphase: review.json then holds them all
                if iid == first:
                    continue
                _, d = call(base, f"/api/images/{iid}")
                v = json.loads(d)
                if not v["instances"]:
                    continue
                dt, _ = call(base, f"/api/images/{iid}/edit",
                             {"version": v["version"], "op": "class", "id": v["instances"][0]["id"], "category_id": 5})
                t_fill.append(dt)
            size = sum(f.stat().st_size for f in (pred / "review").glob("*")) + (pred / "review.json").stat().st_size
            version, t_all_edited, kg_all = edits(first, version, a.edits)
            dt_batch, _ = call(base, "/api/batch")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    date = a.date or time.strftime("%Y-%m-%d")
    hw = a.hardware or f"{platform.machine()}, {os.cpu_count()} cores"
    argv_shown = [shown(x) if Path(x).exists() else x for x in (argv or sys.argv[1:])]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines += [
        "", f"## {a.n} metaphases ({date}, commit {commit()})", "",
        f"- command: `OMP_NUM_THREADS=1 {shlex.join(['python', 'benchmarks/bench_review_speed.py'] + argv_shown)}`",
        f"- hardware: {hw}; load average {load:.1f} at the end. Times are wall-clock as the page sees them; "
        "\"server CPU\" is the CPU time the server process spent meanwhile (`/proc`), what the time would be on "
        "an idle core",
        f"- folder: {a.n} metaphases replicated from {src_shown} ({n_inst} chromosomes), images copied to a "
        "temporary folder; server: `chromoseg review DIR --no-browser` in a subprocess on 127.0.0.1", "",
        "| what | time | aim |", "|---|---|---|",
        f"| server start (command to printed address) | {t_start:.2f} s (server CPU {start_cpu.get(first_pid, float('nan')):.2f} s) | |",
    ]
    if bt:
        def cpus(k):
            return (f"server CPU {bt[k + '_cpu']:.2f} s + Chromium CPU {bt[k + '_browser_cpu']:.2f} s "
                    f"= {bt[k + '_cpu'] + bt[k + '_browser_cpu']:.2f} s")
        lines += [
            f"| page open in headless Chromium, cold: the batch list shown ({bt['batch_items']} metaphases) | "
            f"{bt['cold_batch']:.2f} s ({cpus('cold_batch')}) | < 2 s |",
            f"| page open, cold: the first metaphase shown (outlines, karyogram and its layout) | "
            f"{bt['cold']:.2f} s ({cpus('cold')}) | < 2 s |",
            f"| the server's CPU from its command to the first metaphase shown (start, warm-up, page) | "
            f"{bt['cold_server_total_cpu']:.2f} s | |",
            f"| page open again (reload): batch list / first metaphase | {bt['reload_batch']:.2f} s / "
            f"{bt['reload']:.2f} s ({cpus('reload')}) | < 2 s |",
            f"| next metaphase (N) | {bt['next']:.2f} s (server CPU {bt['next_cpu']:.2f} s) | |",
        ]
    else:
        lines.append("| page open in a browser | not measured (Playwright or Chromium missing) | < 2 s |")
    lines += [
        f"| the page's 8 requests one after the other, cold (urllib) | {t_seq:.2f} s | |",
        f"| edit saved (POST, class change), one metaphase edited | {stats(t_one)} | < 200 ms |",
        f"| edit saved, all {a.n} metaphases edited (saved state {size / 1e6:.1f} MB) | {stats(t_all_edited)} | < 200 ms |",
        f"| server CPU per edit: one metaphase edited / all edited | {stats(cpu_one)} / {stats(cpu_edit)} | |",
        f"| first edit of each other metaphase | {stats(t_fill)} | < 200 ms |",
        f"| the karyogram after an edit (rendered afresh, straightened) | {stats(kg_one + kg_all)} | |",
        f"| server CPU per karyogram after an edit | {stats(cpu_kg)} | |",
        f"| batch list (`/api/batch`) with all edited | {1000 * dt_batch:.0f} ms | |",
        "", "The page's requests (cold, over HTTP with urllib, one after the other):", "",
        "| request | time |", "|---|---|",
        *[f"| `{p}` | {1000 * t:.0f} ms |" for p, t in req_times.items()],
        "", "The page's requests in-process (Starlette's test client, no HTTP, no warm-up; wall / CPU of this "
        f"process; reading the folder first: {ip['read'][0]:.2f} s / {ip['read'][1]:.2f} s CPU):", "",
        "| request | cold | again |", "|---|---|---|",
        *[f"| `{p}` | {1000 * w:.0f} ms / {1000 * c:.0f} ms CPU | {1000 * ip['again'][p][0]:.0f} ms / "
          f"{1000 * ip['again'][p][1]:.0f} ms CPU |" for p, (w, c) in ip["cold"].items()],
        f"| all | {sum(w for w, _ in ip['cold'].values()):.2f} s / {sum(c for _, c in ip['cold'].values()):.2f} s CPU "
        f"| {sum(w for w, _ in ip['again'].values()):.2f} s / {sum(c for _, c in ip['again'].values()):.2f} s CPU |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.md:
        append_markdown(a.md, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
