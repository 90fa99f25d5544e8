"""``chromoseg benchmark table1|table2``: the paper's tables, measured on an annotated split."""
from __future__ import annotations

import argparse

from chromoseg.cli import COMMANDS, nonneg_int
from chromoseg.engine.settings import PAPER_SCORE_THRESHOLD

HELP = """\
Evaluate trained variants on an annotated split and write the paper's Table I or II as Markdown and
JSON, with our numbers beside the paper's, the command, data, hardware and date.

  table1  snake, mr, rmr, ermr; multi-class (24) and binary   (paper Table I)
  table2  rmr (ERM-1), erm2 (ED), erm3 (H&R), ermr (ERM-4)     (paper Table II, multi-class)

Each model predicts once by the paper's rule (class scores, each chromosome's own class; all
detections after mask NMS, whatever the model file recommends); AP is then computed under the
paper's {paper} confidence threshold and, for reference, without it (standard COCO).

example:
  chromoseg benchmark table1 --model snake=runs/snake/best.pt --model mr=runs/mr/best.pt \\
      --model rmr=runs/rmr/best.pt --model ermr=runs/ermr/best.pt --data datasets/mfish/test.json --out benchmarks/results
"""


def _cmd(args) -> int:
    import torch

    from chromoseg.cli import CliError
    from chromoseg.engine.tables import run_table
    from chromoseg.models.variants import canonical_name

    ckpts = {}
    for item in args.model:
        if "=" not in item:
            raise CliError(f"--model {item}: expected NAME=PATH, e.g. ermr=runs/ermr/best.pt")
        name, path = item.split("=", 1)
        ckpts[canonical_name(name.strip())] = path
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        report = run_table(args.table, ckpts, args.data, args.work, args.out, device=args.device,
                           progress=not args.quiet, binary_gt=args.binary_data)
    except (ValueError, FileNotFoundError) as err:
        raise CliError(str(err)) from err
    print((__import__("pathlib").Path(args.out) / f"{args.table}.md").read_text())
    return 0 if report["rows"] else 1


def register(sub) -> None:
    p = sub.add_parser("benchmark", help=COMMANDS["benchmark"][1],
                       description=HELP.replace("{paper}", f"{PAPER_SCORE_THRESHOLD:g}"),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", choices=("table1", "table2"))
    p.add_argument("--model", action="append", default=[], metavar="NAME=PATH", required=True,
                   help="a variant's checkpoint, e.g. ermr=runs/ermr/best.pt (repeat for each row)")
    p.add_argument("--data", default="datasets/mfish/test.json", help="annotated split (default: the M-FISH test split)")
    p.add_argument("--binary-data", metavar="JSON", default=None,
                   help="another annotated set scored class-agnostically as an extra column (e.g. "
                        "datasets/bioimlab/test.json)")
    p.add_argument("--out", default="benchmarks/results", help="folder for TABLE.md and TABLE.json")
    p.add_argument("--work", default="out/tables", help="folder for the predictions (default out/tables)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=nonneg_int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd)
