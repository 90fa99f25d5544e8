"""Tables I and II trained to a plateau (issue 25): one recipe, six networks, resumable stretches.

Every session runs ONE command for its training stretch; the campaign goes on where the last one
stopped and the tables fill in as networks finish:

    MINUTES=100 .venv/bin/python benchmarks/tables_campaign.py
    git add benchmarks/results/tables_campaign.md benchmarks/results/tables_campaign.json   # then commit

``MINUTES`` (or ``--minutes``) is this call's wall-clock budget. The campaign lives in ``--root``
(default ``~/chromoseg-runs/tables-campaign``, outside the repository): ``data/`` (the imports),
``pretrain/`` (the common starting backbone), ``seedS/NETWORK/`` (each ``chromoseg train`` run
folder), ``eval/`` (each finished network's test predictions and figures), ``src/COMMIT/`` (the frozen
source the stretches run), ``campaign.json`` (the pinned recipe), ``stretches.jsonl`` (every training
call: network, epochs, wall time, commit, why it stopped).

What one call does:

1. On the first call: imports the M-FISH set (fixed slide split) and BioImLab's (the other lab's binary
   column) into ``ROOT/data`` (or takes ``--mfish`` / ``--bioimlab`` imports), pretrains the common
   backbone (``chromoseg pretrain``, ~10 min here) and pins the recipe in ``campaign.json``; a later call
   with other recipe options is refused (one recipe for all networks).
2. Trains the first unfinished network of the queue -- seed 0: MR, ERMR, RMR, Deep Snake, ERM-2, ERM-3
   (the pair the paper's claim rests on first, then what completes Table I, then Table II), then seed 1:
   MR, ERMR (the seed spread of that pair) -- with ``chromoseg train --resume`` from its run folder, in
   whole epochs (``--stop-after K``, K the epochs that fit in what is left of the budget by the
   network's measured wall time per epoch; a ``--time-limit`` only as a safety net), then the next.
3. A network is finished when early stopping fired (``metrics.jsonl`` event ``early_stop``) or its
   epoch cap was reached (event ``epochs``, or its last epoch is the cap); then ``finished.json`` is
   written in its run folder and its ``best.pt`` (chosen on VALIDATION AP) is evaluated once on the
   M-FISH TEST split and BioImLab's test split, the way ``chromoseg benchmark`` evaluates (the paper's
   rule: class scores, each chromosome's own class; AP under the 0.5 threshold and COCO without one),
   plus object scores for the rotated variants. The test split never chooses anything.
4. Writes ``ROOT/tables_campaign.md`` / ``.json`` and the same into ``--results`` (default
   ``benchmarks/results``): progress (epochs, minutes, training and inference images/s per network),
   Tables I and II with the paper's figures (unfinished rows: "training (epoch N)"), the seeds. Once all
   four networks of a table (seed 0) are finished it also runs ``chromoseg benchmark table1`` / ``table2``
   on them (``ROOT/benchmark/``), the command the issue's "done" names.

The recipe (every network; ``campaign.json``): M-FISH training split (109 metaphases; validation 23),
ResNet-18 ``--compact`` from the same pretrained backbone file, input 480 x 384, default augmentation,
SGD lr 0.005 constant after the 200-step warm-up, momentum 0.9, batch 2, at most 100 epochs, early
stopping with patience 10 on the validation 24-class mask AP without a score threshold
(``mask_ap_coco``) with class scores, fp32 unless bf16 is native (pinned at the first call).

Why that metric: the paper early-stops on the mask loss; the issue asks for validation mask AP. Under the
paper's 0.5 score threshold the APs stay 0 for many epochs (after 17 CPU minutes no network gave any
detection a class score of 0.5: table1.md), so patience would count epochs of a constant 0 -- a
degenerate monitor. The COCO AP (no threshold) moves from the first epoch, ranks detections by the
same class scores the paper's rule uses, is defined for all six networks (object scores are not: MR
and Deep Snake have none) and is 24-class, what Table II reports. Patience 10 is the paper's; an AP on
23 validation images is noisier than a loss, but 10 epochs (1090 training images) without a better
one is a plateau at this learning rate.

Each stretch runs the committed source (``git archive HEAD`` into ``ROOT/src/COMMIT``, the commit
recorded per stretch), not the working tree, so edits made while it trains cannot break it.

Tiny end-to-end check of the runner (tiny networks, 256 x 320, 4 training / validation images, epoch cap 3,
patience 1, 2 test images; ``--mfish`` / ``--bioimlab``: existing imports, so nothing is imported).
Call it a few times: the first pretrains the tiny backbone and stops on its budget, the next ones resume
MR, finish it at the cap, evaluate it and fill its rows (every call says what it did; the tables are in
/tmp/tables-tiny/tables_campaign.md). On a quiet 2-core machine a tiny epoch takes seconds; on this one
under another training job (nice 19) it took 2-8 minutes, so a call of 16 minutes finishes one network:

    MINUTES=3 .venv/bin/python benchmarks/tables_campaign.py --tiny --root /tmp/tables-tiny \
        --mfish datasets/mfish --bioimlab datasets/bioimlab
    MINUTES=16 .venv/bin/python benchmarks/tables_campaign.py --tiny --root /tmp/tables-tiny   # repeat

A call may run over its budget by about one epoch where a network's first epoch is not yet measured
(then it trains one epoch to measure it), and by an evaluation when a network finishes late.
"""
from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOME = str(Path.home())

#: one recipe for every network (issue 25, deliverable 1); pinned in ROOT/campaign.json at the first call
RECIPE = {"backbone": "resnet18", "compact": True, "small": False, "image_size": "480x384", "epochs": 100,
          "patience": 10, "early_stop_metric": "mask_ap_coco", "val_score": "class", "val_every": 1,
          "lr": 0.005, "lr_schedule": "constant", "batch_size": 2, "max_images": None,
          "pretrain": ["--backbone", "resnet18", "--image-size", "64", "--max-cells", "200", "--epochs", "3",
                       "--batch-size", "64"],
          "test_images": None}
#: the tiny check: the same logic on tiny networks in seconds per epoch
TINY = {**RECIPE, "compact": False, "small": True, "image_size": "256x320", "epochs": 3, "patience": 1,
        "max_images": 4, "pretrain": ["--backbone", "resnet18", "--image-size", "32", "--max-cells", "10",
                                      "--epochs", "1", "--batch-size", "16"], "test_images": 2}
#: seed 0: the pair the claim rests on, then what completes Table I, then Table II; seed 1: that pair again
QUEUE = [(0, "mr"), (0, "ermr"), (0, "rmr"), (0, "snake"), (0, "erm2"), (0, "erm3"), (1, "mr"), (1, "ermr")]
TABLE_VARIANTS = {"table1": ("snake", "mr", "rmr", "ermr"), "table2": ("rmr", "erm2", "erm3", "ermr")}
LABELS = {"snake": "Deep Snake", "mr": "MR", "rmr": "RMR (ERM-1)", "erm2": "ERM-2 (ED)", "erm3": "ERM-3 (H&R)",
          "ermr": "ERMR (ERM-4)"}
ROTATED = {"rmr", "erm2", "erm3", "ermr"}  # detections with class_scores: object scores defined


def tilde(text: str) -> str:
    """No path of this machine in what is written: the home folder as ~, the repository as ."""
    return str(text).replace(str(REPO) + "/", "").replace(str(REPO), ".").replace(HOME, "~")


def now_utc() -> str:
    return f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"


def log(msg: str) -> None:
    print(f"[{datetime.datetime.now():%H:%M:%S}] {msg}", flush=True)


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for ln in path.read_text().splitlines():
        try:
            out.append(json.loads(ln))
        except json.JSONDecodeError:  # a line cut by a kill
            pass
    return out


def append_jsonl(path: Path, rec: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


# ---- a network's state, from its run folder ----------------------------------------------------

def run_state(run: Path, cap: int) -> dict:
    """What ``run``'s metrics.jsonl says: state queued / training / finished, epochs, why it finished,
    its best (validation) epoch, training minutes and images/s."""
    recs = read_jsonl(run / "metrics.jsonl")
    epochs = {}
    for r in recs:
        if "event" not in r and "epoch" in r:
            epochs[r["epoch"]] = r  # a redone epoch (a kill between the two writes) counts once
    ev = [r for r in recs if "event" in r]
    n = max(epochs, default=0)
    reason = None
    if any(e["event"] == "early_stop" for e in ev):
        reason = "early stopping"
    elif n >= cap or any(e["event"] == "epochs" and e.get("epoch", 0) >= cap for e in ev):
        reason = "epoch cap"
    whole = [r for r in epochs.values() if not r.get("train/partial")]
    images = sum(r.get("train/images", 0) for r in whole)
    secs = sum(r.get("train/seconds", 0.0) for r in whole)
    last = epochs.get(n, {})
    state = "queued" if not (run / "last.pt").is_file() else ("finished" if reason else "training")
    return {"state": state, "epochs": n, "reason": reason, "best_epoch": last.get("best_epoch"),
            "best": last.get("best"), "monitored": last.get("monitored"),
            "partial_epochs": sum(1 for r in epochs.values() if r.get("train/partial")),
            "validation_failed": sum(1 for e in ev if e["event"] == "validation_failed"),
            "train_minutes": sum(r.get("train/seconds", 0.0) for r in epochs.values()) / 60,
            "val_ap_minutes": sum(r.get("val/ap_seconds", 0.0) or 0.0 for r in epochs.values()) / 60,
            "train_images_per_s": images / secs if secs else None}


def stretch_minutes(stretches: list[dict], seed: int, variant: str) -> float:
    return sum(s["wall_s"] for s in stretches if s["seed"] == seed and s["variant"] == variant) / 60


def seconds_per_epoch(stretches: list[dict], seed: int, variant: str):
    """The network's wall seconds per epoch (training, both validation passes and the call's start-up)
    over its stretches; None before its first."""
    mine = [s for s in stretches if s["seed"] == seed and s["variant"] == variant and s.get("epochs_run", 0) > 0]
    if not mine:
        return None
    return sum(s["wall_s"] for s in mine) / sum(s["epochs_run"] for s in mine)


def plan_epochs(avail_s: float, per_epoch, first_min_s: float) -> int:
    """Whole epochs to ask of the next stretch: what fits in ``avail_s`` at ``per_epoch`` seconds; a
    network never measured gets one epoch (then it is measured) if ``first_min_s`` is left."""
    if per_epoch is None:
        return 1 if avail_s >= first_min_s else 0
    return max(0, int(avail_s // per_epoch))


# ---- the campaign --------------------------------------------------------------------------------

class Campaign:
    def __init__(self, a):
        self.a = a
        self.root = Path(os.path.expanduser(a.root)).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.py = sys.executable
        self.env = dict(os.environ)
        self.commit = None

    # the source every subprocess runs
    def freeze_source(self) -> None:
        if self.a.source == "worktree":
            self.src = REPO / "src"
            self.commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, text=True,
                                         capture_output=True).stdout.strip() + "+worktree"
        else:
            self.commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, text=True,
                                         capture_output=True, check=True).stdout.strip()
            tree = self.root / "src" / self.commit
            if not (tree / "src" / "chromoseg").is_dir():
                tmp = tree.with_name(tree.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                arch = subprocess.run(["git", "archive", self.commit, "src"], cwd=REPO, capture_output=True, check=True)
                subprocess.run(["tar", "-x", "-C", str(tmp)], input=arch.stdout, check=True)
                tmp.rename(tree)
            for old in (self.root / "src").iterdir():  # older snapshots: 66 MB each
                if old != tree:
                    shutil.rmtree(old, ignore_errors=True)
            self.src = tree / "src"
        self.env["PYTHONPATH"] = str(self.src) + (os.pathsep + self.env["PYTHONPATH"] if self.env.get("PYTHONPATH") else "")

    def cs(self, *args, log_to: Path | None = None, check: bool = True) -> int:
        cmd = [self.py, "-m", "chromoseg.cli", *map(str, args)]
        with open(log_to, "a") if log_to else open(os.devnull, "w") as out:
            if log_to:
                out.write(f"\n$ {tilde(' '.join(cmd))}  # {now_utc()}, source {self.commit}\n")
                out.flush()
            rc = subprocess.run(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO).returncode
        if check and rc:
            raise SystemExit(f"failed ({rc}): {tilde(' '.join(cmd))}; see {tilde(log_to) if log_to else 'above'}")
        return rc

    # step 1: data, backbone, recipe
    def setup(self) -> dict:
        data = self.root / "data"
        data.mkdir(exist_ok=True)
        shared = Path(self.a.shared)
        logf = self.root / "setup.log"
        for name, fmt, src, given in (("mfish", "mfish", shared / "adir-mfish", self.a.mfish),
                                      ("bioimlab", "labelme", shared / "bioimlab-qband", self.a.bioimlab)):
            d = data / name
            if given and not d.exists():
                d.symlink_to(Path(given).resolve())
            if not (d / "test.json").is_file():
                log(f"importing {src} into {tilde(d)} (once)")
                self.cs("data", "import", fmt, src, "--out", d, "--quiet", log_to=logf)
        recipe = dict(TINY if self.a.tiny else RECIPE)
        pinned = self.root / "campaign.json"
        if pinned.is_file():
            saved = json.loads(pinned.read_text())
            want = {**recipe, "amp": self.a.amp or saved["recipe"]["amp"]}
            if saved["recipe"] != want:
                diff = {k: (saved["recipe"].get(k), want.get(k)) for k in set(want) | set(saved["recipe"])
                        if saved["recipe"].get(k) != want.get(k)}
                raise SystemExit(f"{tilde(pinned)} pins another recipe (pinned, asked): {diff}; one recipe per "
                                 "campaign: use another --root")
            recipe = saved["recipe"]
        else:
            amp = self.a.amp
            if amp is None:  # fp32 unless this CPU computes bf16 natively (train --amp auto's rule)
                probe = subprocess.run([self.py, "-c", "from chromoseg.engine.amp import cpu_has_native_bf16 as f; "
                                        "print(int(f()))"], env=self.env, capture_output=True, text=True)
                amp = "bf16" if probe.stdout.strip() == "1" else "off"
            recipe["amp"] = amp
        bb = self.root / "pretrain" / "backbone.pt"
        if not bb.is_file():
            log(f"pretraining the common backbone into {tilde(bb.parent)} (once)")
            self.cs("pretrain", "--data", shared / "single-chromosomes-gband", *recipe["pretrain"], "--workers", "0",
                    "--device", self.a.device, "--no-progress", "--out", bb.parent, log_to=logf)
        self.mfish, self.bioimlab = data / "mfish", data / "bioimlab"
        self.test, self.binary = self.mfish / "test.json", self.bioimlab / "test.json"
        if recipe["test_images"]:  # the tiny check: the first few test images
            self.test = self.subset(self.test, recipe["test_images"], data / "test_small.json")
            self.binary = self.subset(self.binary, recipe["test_images"], data / "binary_small.json")
        if not pinned.is_file():
            pinned.write_text(json.dumps({"recipe": recipe, "created": now_utc(), "commit": self.commit,
                                          "queue": QUEUE}, indent=1))
        self.recipe, self.backbone = recipe, bb
        return recipe

    @staticmethod
    def subset(src: Path, n: int, dst: Path) -> Path:
        if not dst.is_file():
            d = json.loads(src.read_text())
            ids = {im["id"] for im in d["images"][:n]}
            d["images"] = [im for im in d["images"] if im["id"] in ids]
            d["annotations"] = [a for a in d["annotations"] if a["image_id"] in ids]
            for im in d["images"]:  # relative names resolve against the new file's folder
                if not Path(im["file_name"]).is_absolute():
                    im["file_name"] = str((src.parent / im["file_name"]).resolve())
            dst.write_text(json.dumps(d))
        return dst

    def run_dir(self, seed: int, variant: str) -> Path:
        return self.root / f"seed{seed}" / variant

    def states(self) -> dict:
        return {(s, v): run_state(self.run_dir(s, v), self.recipe["epochs"]) for s, v in QUEUE}

    # step 2: one stretch of training
    def train_stretch(self, seed: int, variant: str, k: int, limit_min: float) -> dict:
        r = self.recipe
        run = self.run_dir(seed, variant)
        run.mkdir(parents=True, exist_ok=True)
        before = run_state(run, r["epochs"])
        common = ["--epochs", r["epochs"], "--val-every", r["val_every"], "--device", self.a.device,
                  "--workers", self.a.workers, "--no-progress", "--out", run, "--stop-after", k,
                  "--time-limit", f"{limit_min:.2f}"]
        if (run / "last.pt").is_file():
            self.check_run_config(run)
            args = ["train", "--resume", *common]  # the run's own config; no metric option: that would switch it
        else:
            args = ["train", "--data", self.mfish, "--variant", variant, "--backbone", r["backbone"],
                    "--image-size", r["image_size"], "--patience", r["patience"],
                    "--early-stop-metric", r["early_stop_metric"], "--val-score", r["val_score"], "--lr", r["lr"],
                    "--lr-schedule", r["lr_schedule"], "--batch-size", r["batch_size"], "--amp", r["amp"],
                    "--seed", seed, "--backbone-weights", self.backbone, *common]
            args += ["--compact"] if r["compact"] else []
            args += ["--small"] if r["small"] else []
            args += ["--max-images", r["max_images"]] if r["max_images"] else []
        t0 = time.time()
        log(f"seed {seed} {variant}: epoch {before['epochs']} -> up to {before['epochs'] + k} "
            f"(--stop-after {k}, safety --time-limit {limit_min:.1f} min)")
        rc = self.cs(*args, log_to=run.parent / f"{variant}.log", check=False)
        after = run_state(run, r["epochs"])
        rec = {"seed": seed, "variant": variant, "start": t0, "wall_s": round(time.time() - t0, 1), "rc": rc,
               "epoch_from": before["epochs"], "epoch_to": after["epochs"],
               "epochs_run": after["epochs"] - before["epochs"], "asked": k, "finished": after["reason"],
               "commit": self.commit, "date": now_utc()}
        append_jsonl(self.root / "stretches.jsonl", rec)
        log(f"seed {seed} {variant}: epoch {after['epochs']}, {after['state']}"
            f"{' (' + after['reason'] + ')' if after['reason'] else ''}, {rec['wall_s'] / 60:.1f} min, rc {rc}")
        return rec

    def check_run_config(self, run: Path) -> None:
        """A run folder of this campaign trains the pinned recipe (a hand-made one would mix recipes)."""
        import re

        text = (run / "config.yaml").read_text() if (run / "config.yaml").is_file() else ""
        want = {"early_stop_metric": self.recipe["early_stop_metric"], "patience": str(self.recipe["patience"]),
                "backbone": self.recipe["backbone"], "lr_schedule": self.recipe["lr_schedule"]}
        for key, val in want.items():
            m = re.search(rf"^{key}: (.*)$", text, re.M)
            if m is None or m.group(1).strip().strip("'\"") != val:
                raise SystemExit(f"{tilde(run)}/config.yaml: {key} is {m.group(1) if m else 'missing'}, the campaign "
                                 f"pins {val}: not this campaign's run")

    # step 3: a finished network's test figures
    def finish(self, seed: int, variant: str, st: dict) -> None:
        run = self.run_dir(seed, variant)
        marker = run / "finished.json"
        if not marker.is_file():
            marker.write_text(json.dumps({**st, "date": now_utc()}, indent=1))
        out = self.root / "eval" / f"seed{seed}" / variant
        row = out / "row.json"
        stamp = (run / "best.pt").stat().st_mtime_ns
        if row.is_file() and json.loads(row.read_text()).get("stamp") == stamp:
            return
        log(f"seed {seed} {variant}: evaluating best.pt (epoch {st['best_epoch']}) on the test splits")
        cmd = [self.py, str(Path(__file__).resolve()), "_eval", "--ckpt", str(run / "best.pt"), "--variant", variant,
               "--test", str(self.test), "--binary", str(self.binary), "--work", str(out), "--device", self.a.device]
        out.mkdir(parents=True, exist_ok=True)
        with open(out.parent / f"{variant}.log", "a") as f:
            rc = subprocess.run(cmd, env=self.env, stdout=f, stderr=subprocess.STDOUT).returncode
        if rc:
            raise SystemExit(f"evaluation of seed {seed} {variant} failed; see {tilde(out.parent / (variant + '.log'))}")

    def benchmarks(self, states: dict) -> dict:
        """``chromoseg benchmark table1/table2`` on seed 0's checkpoints, once all four of a table are
        finished (again only when a checkpoint changed)."""
        done = {}
        for table, vs in TABLE_VARIANTS.items():
            if not all(states[(0, v)]["state"] == "finished" for v in vs):
                continue
            out = self.root / "benchmark"
            j = out / f"{table}.json"
            newest = max((self.run_dir(0, v) / "best.pt").stat().st_mtime for v in vs)
            if not (j.is_file() and j.stat().st_mtime > newest):
                log(f"chromoseg benchmark {table} (all four finished)")
                models = [a for v in vs for a in ("--model", f"{v}={self.run_dir(0, v) / 'best.pt'}")]
                extra = ["--binary-data", self.binary] if table == "table1" else []
                self.cs("benchmark", table, *models, "--data", self.test, *extra, "--out", out, "--work",
                        self.root / "benchmark_work", "--device", self.a.device, "--quiet",
                        log_to=self.root / "benchmark.log")
            done[table] = json.loads(j.read_text())
        return done


# ---- evaluation of one finished network (a subprocess on the frozen source) ------------------------

def eval_row(a) -> None:
    """The rows ``chromoseg benchmark`` writes for one network (the same predictor settings and
    evaluation calls as ``chromoseg.engine.tables.run_table``), plus object scores for rotated
    variants, inference images/s and how many detections reach the 0.5 threshold."""
    import torch

    from chromoseg.data.coco import load_coco, resolve_image_path
    from chromoseg.engine.evaluate import evaluate
    from chromoseg.engine.predict import Predictor, predict_paths
    from chromoseg.engine.tables import THRESHOLDS

    work = Path(a.work)
    ck = Path(a.ckpt)
    sets = {"test": Path(a.test), "binary": Path(a.binary)}
    paths = {k: [resolve_image_path(im["file_name"], p.parent) for im in load_coco(p)["images"]] for k, p in sets.items()}
    row = {"checkpoint": tilde(ck), "stamp": ck.stat().st_mtime_ns, "variant": a.variant, "date": now_utc(),
           "threads": torch.get_num_threads(), "test_images": len(paths["test"]), "scores": {}}
    for score in ("class", "object") if a.variant in ROTATED else ("class",):
        pred = Predictor.from_checkpoint(ck, {"score": score, "classes": "independent", "score_threshold": 0.0},
                                         device=a.device)
        res = {}
        for key, p in sets.items():
            pdir = work / f"{score}-{key}"
            t0 = time.perf_counter()
            predict_paths(pred, paths[key], pdir, overlays=False, label_images=False, karyotype=False, progress=False)
            dt = time.perf_counter() - t0
            modes = ("multi", "binary") if key == "test" else ("binary",)
            res[key] = {thr_key: {m: {k: rep["metrics"][m]["segm"][k] for k in ("AP", "AP50", "AP75")} for m in modes}
                        for thr_key, rep in ((tk, evaluate(p, pdir / "results.json", score_threshold=thr, modes=modes,
                                                           iou_types=("segm",))) for tk, thr in THRESHOLDS.items())}
            dets = json.loads((pdir / "results.json").read_text())
            res[key]["detections"] = len(dets)
            res[key]["detections_ge_0.5"] = sum(1 for d in dets if d["score"] >= 0.5)
            res[key]["max_score"] = max((d["score"] for d in dets), default=None)
            if key == "test":
                res[key]["images_per_s"] = len(paths[key]) / dt
        row["scores"][score] = res
    (work / "row.json").write_text(json.dumps(row, indent=1))


# ---- the tables ------------------------------------------------------------------------------------

PAPER_T1 = {("snake", "multi"): (47.01, 58.26, 56.95), ("snake", "binary"): (64.16, 80.87, 77.83),
            ("mr", "multi"): (42.43, 64.16, 55.99), ("rmr", "multi"): (47.87, 64.27, 61.15),
            ("ermr", "multi"): (49.52, 65.89, 63.11), ("mr", "binary"): (58.23, 90.72, 75.25),
            ("rmr", "binary"): (66.04, 90.81, 84.39), ("ermr", "binary"): (69.96, 95.83, 89.71)}
PAPER_T2 = {"rmr": (47.87, 64.27, 61.15), "erm2": (47.98, 64.26, 61.28), "erm3": (48.96, 65.96, 63.37),
            "ermr": (49.52, 65.89, 63.11)}


def _p(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def _waiting(st: dict) -> str:
    return f"training (epoch {st['epochs']})" if st["state"] == "training" else "queued"


def write_tables(c: Campaign, states: dict, stretches: list[dict], benches: dict, call: dict) -> str:
    r = c.recipe
    rows = {}
    for key in QUEUE:
        f = c.root / "eval" / f"seed{key[0]}" / key[1] / "row.json"
        if states[key]["state"] == "finished" and f.is_file():
            rows[key] = json.loads(f.read_text())
    cmd = ("MINUTES=<budget> .venv/bin/python benchmarks/tables_campaign.py"
           + (" --tiny" if c.a.tiny else "") + (f" --root {tilde(c.root)}" if c.a.root != DEFAULT_ROOT else ""))
    commits = sorted({s["commit"] for s in stretches})
    L = ["# Tables I and II trained to a plateau: the campaign (issue 25)" + (" -- TINY CHECK, not figures" if c.a.tiny else ""),
         "",
         f"- how: `{cmd}` per session (resumes where the last stopped; `benchmarks/tables_campaign.py`'s header)",
         f"- recipe, every network: M-FISH training split (fixed slide split; validation split for early stopping and "
         f"best.pt), backbone {r['backbone']}{' --compact' if r['compact'] else ''}{' --small' if r['small'] else ''} "
         f"from one pretrained file (`chromoseg pretrain {' '.join(r['pretrain'])}`), input {r['image_size']}, "
         f"default augmentation, SGD lr {r['lr']} {r['lr_schedule']}, batch {r['batch_size']}, amp {r['amp']}, at most "
         f"{r['epochs']} epochs, early stopping patience {r['patience']} on validation `{r['early_stop_metric']}` "
         f"({r['val_score']} scores)" + (f", {r['max_images']} images" if r["max_images"] else ""),
         f"- test: `{tilde(c.test)}` (M-FISH test split: never used to choose anything) and `{tilde(c.binary)}` "
         "(BioImLab test, binary column); AP ×100, mask, pycocotools; 'paper' = detections with score >= 0.5 "
         "(the paper's protocol), 'COCO' = no threshold",
         f"- last call: {call['date']}, {call['minutes']:.0f} min budget, {call['used']:.1f} min used; source "
         f"commits so far: {', '.join(commits) or '-'}; hardware of the evaluations: see each row's threads", "",
         "## Progress", "",
         "| seed | network | state | epochs | best epoch (val AP) | train min | wall min | train img/s | inference img/s | "
         "class scores >= 0.5 (test) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key in QUEUE:
        st, row = states[key], rows.get(key)
        state = st["state"] + (f" ({st['reason']})" if st["reason"] else "")
        if st["partial_epochs"]:
            state += f", {st['partial_epochs']} partial epoch(s)"
        best = f"{st['best_epoch']} ({100 * st['best']:.2f})" if st["best"] is not None else "–"
        ips = f"{st['train_images_per_s']:.2f}" if st["train_images_per_s"] else "–"
        cl = row["scores"]["class"]["test"] if row else None
        inf = f"{cl['images_per_s']:.2f}" if cl else "–"
        reach = "–" if cl is None else ("no detection" if cl["max_score"] is None else
                                        f"{cl['detections_ge_0.5']} of {cl['detections']} (max {cl['max_score']:.2f})")
        L.append(f"| {key[0]} | {LABELS[key[1]]} | {state} | {st['epochs']} | {best} | {st['train_minutes']:.0f} | "
                 f"{stretch_minutes(stretches, *key):.0f} | {ips} | {inf} | {reach} |")

    def cells(row, score, key, mode):
        if row is None or score not in row["scores"]:
            return None
        res = row["scores"][score][key]
        return res["0.5"][mode], res["0.0"][mode]

    def table(title, variants, modes, paper, seed=0, score="class"):
        out = [f"## {title}", "", "| network | mode | AP | AP@0.5 | AP@0.75 | AP (COCO) | paper AP | paper AP@0.5 | "
               "paper AP@0.75 |", "|---|---|---|---|---|---|---|---|---|"]
        for mode in modes:
            for v in variants:
                key = (seed, v)
                pp = paper.get((v, mode), paper.get(v, (None, None, None))) if paper else (None, None, None)
                pap = " | ".join("–" if x is None else str(x) for x in pp)
                c_ = cells(rows.get(key), score, "test", mode)
                if key not in states:
                    continue
                if c_ is None:
                    what = "–" if states[key]["state"] == "finished" and score == "object" else _waiting(states[key])
                    if score == "object" and v not in ROTATED:
                        what = "no object scores"
                    out.append(f"| {LABELS[v]} | {mode} | {what} | | | | {pap} |")
                else:
                    p, co = c_
                    out.append(f"| {LABELS[v]} | {mode} | {_p(p['AP'])} | {_p(p['AP50'])} | {_p(p['AP75'])} | "
                               f"{_p(co['AP'])} | {pap} |")
        return out + [""]

    L += [""] + table("Table I (seed 0; class scores, the paper's rule)", TABLE_VARIANTS["table1"], ("multi", "binary"), PAPER_T1)
    L += table("Table I with object scores (1 - P(background); rotated variants; how the shipped models are scored)",
               TABLE_VARIANTS["table1"], ("multi", "binary"), PAPER_T1, score="object")
    L += ["## BioImLab test, binary (another lab's Q-band images; the paper has no such column; class scores)", "",
          "| network | AP | AP@0.5 | AP@0.75 | AP (COCO) |", "|---|---|---|---|---|"]
    for v in TABLE_VARIANTS["table1"]:
        row = rows.get((0, v))
        if row is None:
            L.append(f"| {LABELS[v]} | {_waiting(states[(0, v)])} | | | |")
        else:
            b = row["scores"]["class"]["binary"]
            L.append(f"| {LABELS[v]} | {_p(b['0.5']['binary']['AP'])} | {_p(b['0.5']['binary']['AP50'])} | "
                     f"{_p(b['0.5']['binary']['AP75'])} | {_p(b['0.0']['binary']['AP'])} |")
    L += [""] + table("Table II (seed 0, multi-class; class scores)", TABLE_VARIANTS["table2"], ("multi",), PAPER_T2)
    L += table("Table II with object scores", TABLE_VARIANTS["table2"], ("multi",), PAPER_T2, score="object")
    L += ["## Seeds: MR and ERMR (COCO mask AP, no threshold, class scores; M-FISH test)", "",
          "| network | seed | multi AP | binary AP | BioImLab binary AP |", "|---|---|---|---|---|"]
    for v in ("mr", "ermr"):
        for s in (0, 1):
            row = rows.get((s, v))
            if row is None:
                L.append(f"| {LABELS[v]} | {s} | {_waiting(states[(s, v)])} | | |")
            else:
                t, b = row["scores"]["class"]["test"]["0.0"], row["scores"]["class"]["binary"]["0.0"]
                L.append(f"| {LABELS[v]} | {s} | {_p(t['multi']['AP'])} | {_p(t['binary']['AP'])} | "
                         f"{_p(b['binary']['AP'])} |")
    if benches:
        L += ["", "## `chromoseg benchmark` on the seed-0 checkpoints (tables complete)", ""]
        for table_name, rep in benches.items():
            L += [f"- {table_name}: `{tilde(rep['command'])}` ({rep['date']}); `{tilde(c.root / 'benchmark' / table_name)}.md`"]
            for v, brow in rep["rows"].items():  # the campaign's rows were computed the same way: they must agree
                mine = rows.get((0, v))
                if mine is not None:
                    a_ = brow["results"]["0.0"]["multi"]["AP"]
                    b_ = mine["scores"]["class"]["test"]["0.0"]["multi"]["AP"]
                    if abs(a_ - b_) > 1e-6:
                        L.append(f"  - {LABELS[v]}: benchmark multi COCO AP {_p(a_)} differs from the row above ({_p(b_)})")
    text = "\n".join(L) + "\n"
    js = {"recipe": r, "queue": QUEUE, "states": {f"seed{s}/{v}": states[(s, v)] for s, v in QUEUE},
          "rows": {f"seed{s}/{v}": rows[(s, v)] for s, v in rows}, "stretches": stretches, "last_call": call}
    outs = [c.root] + ([Path(c.a.results)] if c.a.results else [])
    for d in outs:
        d.mkdir(parents=True, exist_ok=True)
        (d / "tables_campaign.md").write_text(text)
        (d / "tables_campaign.json").write_text(tilde(json.dumps(js, indent=1, default=str)))
    return text


# ---- the command -----------------------------------------------------------------------------------

DEFAULT_ROOT = "~/chromoseg-runs/tables-campaign"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_eval"]:
        e = argparse.ArgumentParser()
        for k in ("--ckpt", "--variant", "--test", "--binary", "--work", "--device"):
            e.add_argument(k, required=True)
        eval_row(e.parse_args(argv[1:]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=float(os.environ.get("MINUTES", "0") or 0),
                    help="this call's wall-clock budget in minutes (default $MINUTES); 0: only write the tables")
    ap.add_argument("--root", default=os.environ.get("ROOT", DEFAULT_ROOT), help=f"the campaign folder (default {DEFAULT_ROOT})")
    ap.add_argument("--results", default=None,
                    help="also write tables_campaign.md/.json here (default benchmarks/results; the tiny check: none)")
    ap.add_argument("--shared", default=str(REPO.parent / "shared" / "data"), help="the shared data folder (for the imports)")
    ap.add_argument("--mfish", help="an existing `chromoseg data import mfish` folder instead of importing (first call)")
    ap.add_argument("--bioimlab", help="an existing `chromoseg data import labelme` folder of BioImLab (first call)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=0, help="data loader processes (not part of the recipe)")
    ap.add_argument("--amp", choices=["off", "bf16"], help="pinned at the first call (default: bf16 where native, else off)")
    ap.add_argument("--source", choices=["commit", "worktree"], default="commit",
                    help="commit (default): every subprocess runs `git archive HEAD`'s src; worktree: the files as they are")
    ap.add_argument("--eval-reserve", type=float, default=None,
                    help="minutes kept back for evaluating a network that finishes (default: measured, first 12; tiny 2)")
    ap.add_argument("--tiny", action="store_true", help="the tiny check of the runner (tiny networks, few images)")
    a = ap.parse_args(argv)
    if a.results is None:
        a.results = None if a.tiny else str(REPO / "benchmarks" / "results")
    t_start = time.time()
    deadline = t_start + 60 * a.minutes
    c = Campaign(a)
    lock = open(c.root / "campaign.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise SystemExit(f"another call is running this campaign ({tilde(c.root)}/campaign.lock)") from None
    c.freeze_source()
    log(f"campaign {tilde(c.root)}, budget {a.minutes:g} min, source {c.commit}")
    c.setup()
    stretches = read_jsonl(c.root / "stretches.jsonl")
    first_min = 1.0 if a.tiny else 8.0  # minutes a never-measured network needs for its first epoch
    failed = None
    while True:
        states = c.states()
        for key, st in states.items():  # finished earlier (or by an earlier call that ran out of time): evaluate
            if st["state"] == "finished":
                c.finish(*key, st)
        todo = [k for k in QUEUE if states[k]["state"] != "finished"]
        if not todo or failed:
            break
        seed, v = todo[0]
        evals = [s for s in read_jsonl(c.root / "evals.jsonl")]
        reserve = a.eval_reserve if a.eval_reserve is not None else (
            max((e["minutes"] for e in evals), default=2.0 if a.tiny else 12.0))
        avail = deadline - time.time() - 60 * reserve
        per = seconds_per_epoch(stretches, seed, v)
        k = plan_epochs(avail, per, 60 * first_min)
        k = min(k, c.recipe["epochs"] - states[(seed, v)]["epochs"])
        if k < 1:
            log(f"budget left {max(0, deadline - time.time()) / 60:.1f} min (keeping {reserve:.0f} for an evaluation): "
                f"no whole epoch of seed {seed} {v} fits ({'%.1f min/epoch' % (per / 60) if per else 'not measured'})")
            break
        safety = (avail + (0.5 * per if per else 60 * first_min)) / 60  # only if an epoch runs far slower than measured
        rec = c.train_stretch(seed, v, k, max(safety, 0.1))
        stretches.append(rec)
        if rec["rc"]:
            failed = f"seed {seed} {v}: chromoseg train exited {rec['rc']} (see {tilde(c.run_dir(seed, v).parent / (v + '.log'))})"
            break
        st = run_state(c.run_dir(seed, v), c.recipe["epochs"])
        if st["state"] == "finished":
            t0 = time.time()
            c.finish(seed, v, st)
            append_jsonl(c.root / "evals.jsonl", {"seed": seed, "variant": v, "minutes": (time.time() - t0) / 60})
        elif rec["epochs_run"] == 0:
            failed = f"seed {seed} {v}: a stretch trained no epoch"
            break
    states = c.states()
    benches = c.benchmarks(states) if not failed else {}
    call = {"date": now_utc(), "minutes": a.minutes, "used": (time.time() - t_start) / 60, "commit": c.commit}
    write_tables(c, states, read_jsonl(c.root / "stretches.jsonl"), benches, call)
    n_done = sum(1 for s in states.values() if s["state"] == "finished")
    log(f"{n_done} of {len(QUEUE)} networks finished; tables in {tilde(c.root / 'tables_campaign.md')}"
        + (f" and {tilde(Path(a.results) / 'tables_campaign.md')}" if a.results else "")
        + f"; {(time.time() - t_start) / 60:.1f} of {a.minutes:g} min used")
    if failed:
        print(f"error: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
