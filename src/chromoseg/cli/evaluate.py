"""The ``chromoseg evaluate`` sub-command (see :mod:`chromoseg.engine.evaluate`)."""
from __future__ import annotations

import argparse

from chromoseg.cli import COMMANDS, positive_int, unit_float
from chromoseg.engine.settings import PAPER_SCORE_THRESHOLD

DESCRIPTION = """\
Evaluate a predictions file against an annotated set, the way the paper's Tables I and II do.

GT.json is a chromoseg dataset (COCO instances: images, annotations with RLE or polygon masks,
categories 1-24 = "1".."22", "X", "Y"). RESULTS.json is a COCO results list, as written by
`chromoseg predict`: [{image_id, category_id, score, segmentation (RLE), bbox (x,y,w,h)}, ...].
An entry may name its image by file name instead of id (a "file_name" key, or a string
"image_id"); names match exactly, else by base name.

What the numbers mean
  AP        COCO average precision, averaged over IoU thresholds 0.50, 0.55, ... 0.95
            (the paper's "AP"); AP@0.5 and AP@0.75 at one IoU. Reported for masks (segm) and
            axis-aligned boxes (bbox). Printed x100 like the paper; report.json holds 0..1.
  multi     24 classes: a detection only counts if its class is right.
  binary    class-agnostic: every class is mapped to one "chromosome" class, so AP measures
            segmentation alone (the paper's binary-class rows).
  threshold Detections with score < the threshold are dropped before AP. Default: the threshold
            the predictions were made at, as `chromoseg predict` records it in the images.json
            beside RESULTS.json (for the shipped models, the threshold their files recommend),
            so all of predict's output is scored; without that file the paper's {paper}. The
            paper's tables are "under the confidence score threshold of {paper}": --score-threshold
            {paper}. --score-threshold 0
            gives the standard COCO protocol. The output always states which was used.
  images    Only the ground-truth images that were predicted are scored (default): those the
            images.json beside RESULTS.json lists, else those the results name. The output
            says how many of the set's images that is and names the others; --all-images
            scores every image, an unpredicted one with all its chromosomes missed.
  maxDets   100 (the paper's top 100 detections), per image and category as in COCOeval.
  confusion Detections are matched to ground truth ignoring class (greedy by score, mask IoU
            >= 0.5); the matrix counts (true class, predicted class), plus "missed" ground truth
            and unmatched ("background") detections.
Box-only sets (G-band VOC import: "chromoseg": {"box_only": true} or images with
"has_masks": false) get box AP only; the output says so.

Entries of RESULTS.json that name unknown images (reported by file name) or categories outside
1-24 are skipped, counted and reported.
"""

EPILOG = """\
examples:
  chromoseg evaluate datasets/mfish/test.json out/pred/results.json
  chromoseg evaluate datasets/mfish/test.json out/pred/results.json --score-threshold 0 --out out/eval
  chromoseg evaluate datasets/mfish/test.json out/pred/results.json --score-threshold {paper} --all-images  # the paper's
  chromoseg evaluate datasets/gband/test.json results.json --mode binary

--out DIR writes report.json (all numbers), summary.md and confusion_matrix.csv.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help=COMMANDS["evaluate"][1],
        description=DESCRIPTION.replace("{paper}", f"{PAPER_SCORE_THRESHOLD:g}"),
        epilog=EPILOG.replace("{paper}", f"{PAPER_SCORE_THRESHOLD:g}"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("gt", metavar="GT.json", help="annotated set (chromoseg COCO instances JSON)")
    p.add_argument("results", metavar="RESULTS.json", help="COCO results list (chromoseg predict output)")
    p.add_argument("--score-threshold", type=unit_float, default=None, metavar="S",
                   help="drop detections with score < S before AP (default: the threshold the predictions were made "
                        "at, from predict's images.json beside RESULTS.json, else the paper's "
                        f"{PAPER_SCORE_THRESHOLD:g}; 0 = standard COCO)")
    p.add_argument("--all-images", action="store_true",
                   help="score every image of GT.json, counting the chromosomes of images that were not predicted as "
                        "misses (default: only the predicted images are scored, and the others are named)")
    p.add_argument("--mode", choices=("multi", "binary", "both"), default="both",
                   help="multi-class (24 classes), binary (class-agnostic) or both (default)")
    p.add_argument("--iou-type", choices=("segm", "bbox", "both"), default="both",
                   help="mask AP (segm), box AP (bbox) or both (default); box-only sets get bbox only")
    p.add_argument("--max-dets", type=positive_int, default=100, metavar="N",
                   help="COCOeval maxDets (default 100, the paper's top 100)")
    p.add_argument("--out", metavar="DIR", help="write report.json, summary.md and confusion_matrix.csv here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from chromoseg.cli import CliError
    from chromoseg.engine.evaluate import EvaluationError, evaluate, format_table, write_report

    modes = ("multi", "binary") if args.mode == "both" else (args.mode,)
    iou_types = ("segm", "bbox") if args.iou_type == "both" else (args.iou_type,)
    try:
        report = evaluate(args.gt, args.results, score_threshold=args.score_threshold,
                          modes=modes, iou_types=iou_types, max_dets=args.max_dets,
                          images="all" if args.all_images else "predicted")
        print(format_table(report))
        if args.out:
            paths = write_report(report, args.out)
            print("\nwrote " + ", ".join(str(p) for p in paths.values()))
    except EvaluationError as err:
        raise CliError(str(err)) from None
    return 0
