"""``chromoseg data build-from-karyograms``: annotated instances from metaphase + karyogram pairs."""
from __future__ import annotations

import argparse

from chromoseg.cli import positive_int, unit_float

HELP = """\
Build a COCO instance set (chromoseg's format) from metaphases and the karyograms made from them, as in
the seed paper's section II.A: every chromosome is cut out of the karyogram with the class of its slot
(standard layout: rows 1-5, 6-12, 13-18, 19-22 + X, Y, an underline with a printed label per class), found
in the metaphase with SIFT + DBSCAN (+ rotated template matching for the ones with few keypoints), and
its mask carried over by the estimated rotation/scale/translation, refined against the metaphase's Otsu
foreground.

Pairs are matched by name: the file name without its suffix and without a trailing one-letter role
token (8129A.001.A.TIF <-> 8129A.001.K.TIF, key '8129A.001'; cell07A.png <-> cell07K.png, key 'cell07').
--pairs CSV (header 'metaphase,karyogram') gives them explicitly.

Writes OUT/annotations.json (image paths relative to OUT), OUT/review/NAME.png (the metaphase with each
matched chromosome's contour, class and score; unmatched cut-outs in a side panel: for manual screening),
OUT/summary.csv (one row per pair: found/matched/unmatched, mean score), OUT/pairs/NAME.csv (one row per
karyogram chromosome) and OUT/skipped.txt. A pair that cannot be read or whose metaphase does not match
its karyogram (fewer than --min-matched of its chromosomes found) is skipped with a message; the batch
goes on.

example:
  chromoseg data build-from-karyograms ../shared/data/karyogram-pairs/a ../shared/data/karyogram-pairs/k \\
      --out out/kp --min-score 0.5
"""


def add_build_parser(data_subparsers) -> argparse.ArgumentParser:
    p = data_subparsers.add_parser(
        "build-from-karyograms",
        help="annotated instances from metaphase + karyogram pairs (paper II.A)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("metaphases", nargs="?", help="folder (or one file) of metaphase images")
    p.add_argument("karyograms", nargs="?", help="folder (or one file) of karyogram images")
    p.add_argument("--pairs", metavar="CSV", help="explicit pairs: CSV with columns metaphase,karyogram")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--min-score", type=unit_float, default=0.0,
                   help="leave matches with a lower match score out of the dataset (score = max(ncc,0) * coverage "
                        "* fill, in [0, 1]; they still appear grey on the review sheet) [0]")
    p.add_argument("--min-matched", type=unit_float, default=0.3,
                   help="skip a pair when fewer than this share of its karyogram chromosomes is found [0.3]")
    p.add_argument("--no-review", action="store_true", help="do not draw review sheets")
    p.add_argument("--no-template", action="store_true",
                   help="SIFT + DBSCAN only (no rotated template search): faster, finds fewer small chromosomes")
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N pairs")
    p.set_defaults(func=run_build)
    return p


def run_build(args) -> int:
    from pathlib import Path

    from chromoseg.cli import CliError

    from chromoseg.data.karyogram_pairs.builder import PairError, build_dataset, pair_by_name, read_pairs_csv
    from chromoseg.data.karyogram_pairs.matching import MatchParams

    problems: list[str] = []
    if args.pairs:
        if args.metaphases or args.karyograms:
            raise CliError("give either METAPHASES KARYOGRAMS or --pairs CSV, not both")
        try:
            pairs = read_pairs_csv(args.pairs)
        except PairError as err:
            raise CliError(str(err)) from err
    else:
        if not (args.metaphases and args.karyograms):
            raise CliError("give METAPHASES and KARYOGRAMS (folders or files), or --pairs CSV")
        for what, p in (("metaphases", args.metaphases), ("karyograms", args.karyograms)):
            if not Path(p).exists():
                raise CliError(f"{what}: {p} does not exist")
        pairs, problems = pair_by_name(args.metaphases, args.karyograms)
    if not 0 <= args.min_matched <= 1:
        raise CliError("--min-matched must be in [0, 1]")
    if args.limit is not None:
        pairs = pairs[: args.limit]
    for msg in problems:
        print(f"warning: {msg}")
    if not pairs:
        raise CliError("no metaphase/karyogram pairs found" + (f" ({len(problems)} files without a partner)" if problems else ""))
    params = MatchParams(template_fallback=not args.no_template)
    summary = build_dataset(
        pairs, args.out, params, min_score=args.min_score, min_matched=args.min_matched,
        review=not args.no_review, skipped=problems,
    )
    print(summary.text())
    return 0 if summary.results else 1
