"""A training run's per-epoch losses as a Markdown table (from its ``metrics.jsonl``).

    python benchmarks/run_table.py RUN_DIR
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def table(run: Path) -> str:
    recs = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    cols = [("lr", "lr", "{:.4f}"), ("train loss", "train/loss", "{:.3f}"), ("train mask", "train/loss_mask", "{:.3f}"),
            ("val loss", "val/loss", "{:.3f}"), ("**val mask**", "val/loss_mask", "{:.3f}"),
            ("val classifier", "val/loss_classifier", "{:.3f}"), ("val endpoint", "val/loss_endpoint", "{:.3f}"),
            ("train s", "train/seconds", "{:.0f}"), ("images/s", "train/images_per_s", "{:.2f}")]
    lines = ["| epoch | " + " | ".join(c[0] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    events = []
    for r in recs:
        if "event" in r:
            events.append(f"{r['event']} at epoch {r.get('epoch')}")
            continue
        best = " (new best)" if r.get("best_epoch") == r["epoch"] else ""
        lines.append(f"| {r['epoch']}{best} | " + " | ".join(fmt.format(r[k]) if k in r else "" for _, k, fmt in cols) + " |")
    return "\n".join(lines) + ("\n\nEvents: " + "; ".join(events) if events else "") + "\n"


if __name__ == "__main__":
    print(table(Path(sys.argv[1])))
