"""``chromoseg data ...``: import real sets, draw annotations, check a set."""
from __future__ import annotations

import argparse
import json
import sys

from chromoseg.cli import COMMANDS, positive_int, unit_float
from chromoseg.data.stain import STAINS

IMPORT_HELP = """\
Turn a public chromosome set into chromoseg's dataset format (COCO instances JSON with rotated boxes
and endpoints). Images are not copied: the JSON refers to them where they are.

formats:
  mfish  ADIR M-FISH label maps (folder with one sub-folder per slide, *D.tif + *K.tif + case_info.txt).
         Instances are derived from the class maps (rule in `chromoseg.data.importers.mfish`); writes
         train/val/test.json by the repository's fixed slide split, all.json, import_report.csv (per image:
         instances found against the karyotype's count, unresolved classes) and problems.json.
  labelme  LabelMe JSON polygons (a folder of *.json, image embedded or beside each file), e.g. the
         BioImLab Q-band set: one polygon per chromosome, no classes (binary evaluation; split by case
         number); embedded images are written once as PNG into OUT/images/. Writes train/val/test.json,
         all.json, import_report.csv (per file: case, split, instances) and problems.json.
  voc    Pascal VOC boxes (folder with images/, annotations/*.xml and optional train.txt/test.txt), e.g.
         the CIL G-band set; class names A1..G22, X, Y map to 1-24. Box-only: no masks.

examples:
  chromoseg data import mfish ../shared/data/adir-mfish --out datasets/mfish
  chromoseg data import voc ../shared/data/cil-gband --out datasets/gband
  chromoseg data import labelme ../shared/data/bioimlab-qband --out datasets/bioimlab
"""


def _cmd_import(args) -> int:
    from chromoseg.cli import CliError

    try:
        if args.format == "mfish":
            from chromoseg.data.importers.mfish import import_mfish

            summary = import_mfish(args.source, args.out, limit=args.limit, progress=not args.quiet,
                                   quiet=args.quiet)
        elif args.format == "labelme":
            from chromoseg.data.importers.labelme import import_labelme

            summary = import_labelme(args.source, args.out, limit=args.limit, progress=not args.quiet,
                                     quiet=args.quiet)
        else:
            from chromoseg.data.importers.voc import import_voc

            summary = import_voc(args.source, args.out, progress=not args.quiet, limit=args.limit, quiet=args.quiet)
    except FileNotFoundError as err:
        raise CliError(str(err)) from err
    print(json.dumps(summary, indent=1))
    print(f"written to {args.out} (problems, if any, in {args.out}/problems.json)")
    for line in summary.get("warnings", []):
        print(f"warning: {line}", file=sys.stderr)
    return 0


def _cmd_show(args) -> int:
    from chromoseg.cli import CliError
    from chromoseg.karyotype.show import show_dataset

    try:
        written, problems = show_dataset(args.annotations, args.out, limit=args.limit, names=args.image,
                                         image_root=args.image_root, progress=not args.quiet)
    except ValueError as err:
        raise CliError(str(err)) from err
    print(f"wrote {len(written)} PNG files to {args.out}" + (f"; {problems.summary()}" if len(problems) else ""))
    return 0 if written or not problems else 1


def _cmd_pseudo_masks(args) -> int:
    from chromoseg.cli import CliError
    from chromoseg.data.pseudo_masks import add_pseudo_masks, measure_pseudo_masks
    from chromoseg.data.stain import inverts

    dark = inverts(args.stain)
    try:
        if args.measure:
            r = measure_pseudo_masks(args.annotations, dark=dark, limit=args.limit, progress=not args.quiet)
            print(f"{args.annotations}: {r['instances']} instances in {r['images']} images: mean IoU {r['mean_iou']:.3f}, "
                  f"IoU >= 0.5 {100 * r['iou_ge_0.5']:.1f}%, IoU >= 0.75 {100 * r['iou_ge_0.75']:.1f}%")
            return 0
        if not args.out:
            raise CliError("give --out FILE (or --measure)")
        r = add_pseudo_masks(args.annotations, args.out, dark=dark, progress=not args.quiet)
    except (ValueError, FileNotFoundError) as err:
        raise CliError(str(err)) from None
    print(f"wrote {args.out}: {r['masks']} masks in {r['images']} images; {r['dropped']} boxes without chromosome "
          f"pixels left out, {r['skipped_images']} images unreadable (see its .problems.json)")
    return 0


def _cmd_split(args) -> int:
    from chromoseg.cli import CliError
    from chromoseg.data.coco import split_dataset

    if not 0.0 < args.fraction < 1.0:
        raise CliError(f"--fraction {args.fraction}: must be between 0 and 1")
    try:
        na, nb = split_dataset(args.annotations, args.out_a, args.out_b, args.fraction, args.seed)
    except (ValueError, FileNotFoundError) as err:
        raise CliError(str(err)) from None
    print(f"wrote {args.out_a} ({na} images) and {args.out_b} ({nb} images)")
    return 0


def _cmd_check(args) -> int:
    from chromoseg.cli import CliError
    from chromoseg.data.coco import load_coco
    from chromoseg.data.report import ProblemLog

    problems = ProblemLog()
    try:
        coco = load_coco(args.annotations, problems, check_files=True)
    except ValueError as err:
        raise CliError(str(err)) from err
    print(f"{args.annotations}: {len(coco['images'])} images, {len(coco['annotations'])} annotations usable; {problems.summary()}")
    return 1 if len(problems) else 0


SYNTH_HELP = """\
Compose synthetic G-banded metaphases with exact annotations from the single-chromosome set (one
CELL.npz per cell of straightened, classed chromosome crops; default: ../shared/data/single-chromosomes-gband).
Each image holds all chromosomes of one cell (about 46), each bent a little, scaled, turned by any angle
and placed in a round spread with a share of touching and overlapping chromosomes (both keep their whole
mask; overlaps come out darker, as in real G-band overlaps), on a light, unevenly lit background with
blur, noise, sometimes an interphase nucleus and debris (neither is an instance). Scale, density,
overlap rate, grey levels and blur follow measurements of the CIL G-band set (the numbers are in
chromoseg.data.synth). With --stain fluorescence the images are DAPI-like instead: the composed image
inverted (chromosomes bright on a dark background, overlaps brighter), chromosomes at the ADIR M-FISH
images' scale and width, bent up to twice as much (training data for the fluorescence model's long,
bent chromosomes).

Writes OUT/images/synth_00001.png ..., OUT/synth.json (chromoseg's format: RLE masks, classes 1-24, rotated
boxes from the masks, endpoints = the two ends of each chromosome's axis; every image names its cell,
every annotation its source crop and its placement: free, touch or overlap) and OUT/synth.problems.json
(unreadable cell files and bad entries: reported and skipped, the run goes on). The same --seed gives
the same files.

--cells picks the cells by chromoseg pretrain's split (by cell, fixed seed, 80/10/10): train images from
'train' cells keep 'val'/'test' cells unseen. Cells are used in a seeded order, cycled when --n is larger.
"""


def _cmd_synth(args) -> int:
    from chromoseg.cli import CliError
    from chromoseg.data.synth import parse_size, synth_dataset

    if args.source is None:
        from chromoseg.data.single_chromosomes import default_data_dir

        args.source = str(default_data_dir())
    try:
        size = parse_size(args.size)
        overrides = {k: v for k, v in (("p_touch", args.p_touch), ("p_overlap", args.p_overlap)) if v is not None}
        if sum(overrides.values()) > 1.0:
            raise ValueError("--p-touch + --p-overlap must not exceed 1")
        from chromoseg.data.synth import SynthParams

        params = SynthParams.fluorescence() if args.stain == "fluorescence" else SynthParams()
        summary = synth_dataset(args.source, args.out, args.n, seed=args.seed, cells=args.cells, size=size,
                                params=params, progress=not args.quiet, **overrides)
    except (ValueError, FileNotFoundError) as err:
        raise CliError(str(err)) from None
    print(f"wrote {summary['images']} images with {summary['instances']} chromosomes ({summary['free']} free, "
          f"{summary['touch']} touching, {summary['overlap']} overlapping) from {summary['cells_used']} cells to "
          f"{args.out}/synth.json; {summary['problem_summary']}")
    return 0 if summary["images"] else 1


def register(sub) -> None:
    p = sub.add_parser("data", help=COMMANDS["data"][1],
                       description="Work with annotated chromosome data sets.")
    dsub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")

    imp = dsub.add_parser("import", help="import a public set into chromoseg's format", description=IMPORT_HELP,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    imp.add_argument("format", choices=("mfish", "labelme", "voc"), help="the source format")
    imp.add_argument("source", help="folder of the source set")
    imp.add_argument("--out", required=True, help="output folder for the JSON files and reports")
    imp.add_argument("--limit", type=positive_int, default=None,
                     help="import only N images, spread over the splits in proportion to their sizes (at least one "
                          "each while N allows), each split's first ones (for a quick look)")
    imp.add_argument("--quiet", action="store_true",
                     help="no progress bar and no line per problem (every problem is still in OUT/problems.json and "
                          "counted in the summary)")
    imp.set_defaults(func=_cmd_import)

    show = dsub.add_parser("show", help="draw annotations over images to PNG",
                           description="Draw each image's annotations (masks in class colours, rotated boxes, "
                                       "endpoints, class labels; flagged instances marked '!') to OUT/<image>.png.")
    show.add_argument("annotations", help="a dataset JSON (e.g. datasets/mfish/train.json)")
    show.add_argument("--out", required=True, help="folder for the PNG files")
    show.add_argument("--limit", type=positive_int, default=None, help="only the first N images")
    show.add_argument("--image", action="append", default=None, help="only this image (file name or stem); repeatable")
    show.add_argument("--image-root", default=None, help="folder for relative image paths (default: the JSON's folder)")
    show.add_argument("--quiet", action="store_true", help="no progress bar")
    show.set_defaults(func=_cmd_show)

    chk = dsub.add_parser("check", help="validate a dataset JSON and its image files",
                          description="Load a dataset as training would and list every problem (labels outside "
                                      "1-24, empty or out-of-image boxes, missing images). Exit 1 if any.")
    chk.add_argument("annotations")
    chk.set_defaults(func=_cmd_check)

    pm = dsub.add_parser(
        "pseudo-masks", help="masks for a box-only set from the image's own pixels (e.g. CIL G-band)",
        description="Give every box of a box-only set (e.g. `data import voc` of the CIL G-band set) a mask: the "
                    "chromosome's pixels inside the box by a per-box threshold, pixels claimed by several boxes "
                    "given to the box they lie deepest in (shared where two chromosomes cross), one connected piece "
                    "per box (rules: chromoseg.data.pseudo_masks). Writes OUT with masks, rotated boxes and "
                    "endpoints and OUT's .problems.json (boxes without chromosome pixels, left out). --measure "
                    "instead scores the method on a set that has masks (boxes derived from its masks).",
        epilog="examples:\n  chromoseg data pseudo-masks datasets/gband/train.json --out datasets/gband/train-pm.json\n"
               "  chromoseg data pseudo-masks datasets/mfish/val.json --measure --stain fluorescence",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    pm.add_argument("annotations", help="a dataset JSON")
    pm.add_argument("--out", help="output dataset JSON (required unless --measure)")
    pm.add_argument("--stain", choices=STAINS, default="brightfield",
                    help="brightfield: dark chromosomes on light (G-band, default); fluorescence: bright on dark")
    pm.add_argument("--measure", action="store_true", help="score against the set's own masks (mean IoU) instead")
    pm.add_argument("--limit", type=positive_int, default=None, help="--measure: only the first N images")
    pm.add_argument("--quiet", action="store_true", help="no progress bar")
    pm.set_defaults(func=_cmd_pseudo_masks)

    sp = dsub.add_parser(
        "split", help="split a dataset JSON by image into two (e.g. a validation set)",
        description="Write two dataset JSONs from one: a seeded random --fraction of its images (with their "
                    "annotations) into --out-b, the rest into --out-a. Image paths are kept as they resolve.",
        epilog="example:\n  chromoseg data split datasets/gband/train-pm.json --fraction 0.1 "
               "--out-a datasets/gband/fit.json --out-b datasets/gband/val.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("annotations", help="a dataset JSON")
    sp.add_argument("--fraction", type=float, default=0.1, help="share of images for --out-b (default 0.1)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out-a", required=True, help="JSON for the rest")
    sp.add_argument("--out-b", required=True, help="JSON for the drawn fraction")
    sp.set_defaults(func=_cmd_split)

    sy = dsub.add_parser(
        "synth", help="synthetic G-band metaphases with exact masks from the single-chromosome set",
        description=SYNTH_HELP,
        epilog="examples:\n  chromoseg data synth --n 2000 --cells train --out datasets/synth-train --seed 0\n"
               "  chromoseg data synth --n 200 --cells val --out datasets/synth-val --seed 1 --size 640x512\n"
               "  chromoseg data synth --n 300 --cells train --stain fluorescence --size 645x517 --out datasets/synth-dapi\n"
               "  chromoseg data show datasets/synth-val/synth.json --out datasets/synth-val/show --limit 5",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sy.add_argument("--source", default=None,
                    help="folder of CELL.npz files (default: ../shared/data/single-chromosomes-gband beside the "
                         "repository)")
    sy.add_argument("--out", required=True, help="output folder (images/, synth.json, synth.problems.json)")
    sy.add_argument("--n", type=positive_int, default=100, help="number of images [100]")
    sy.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same files [0]")
    sy.add_argument("--cells", choices=("train", "val", "test", "all"), default="all",
                    help="which cells to draw from, by chromoseg pretrain's 80/10/10 split by cell [all]")
    sy.add_argument("--size", default="800",
                    help="canvas: the long side in px (the short side is drawn 0.75-1.0 of it, CIL-like) or WxH "
                         "[800, about CIL's median 817]")
    sy.add_argument("--p-touch", type=unit_float, default=None,
                    help="share of chromosomes placed touching another [0.25]")
    sy.add_argument("--p-overlap", type=unit_float, default=None,
                    help="share of chromosomes placed overlapping another (up to 30%% of either's area) [0.25]")
    sy.add_argument("--stain", choices=("gband", "fluorescence"), default="gband",
                    help="gband: dark on light, CIL-like [default]; fluorescence: DAPI-like, bright on dark, "
                         "chromosomes scaled and bent as in the ADIR M-FISH images (SynthParams.fluorescence)")
    sy.add_argument("--quiet", action="store_true", help="no progress bar")
    sy.set_defaults(func=_cmd_synth)

    try:
        from chromoseg.cli.build import add_build_parser
    except ModuleNotFoundError as err:
        if err.name != "chromoseg.cli.build":
            raise
    else:
        add_build_parser(dsub)

    p.set_defaults(func=lambda args: (p.print_help(), 1)[1])
