"""``chromoseg data ...``: import real sets, draw annotations, check a set."""
from __future__ import annotations

import argparse
import json

from chromoseg.cli import positive_int

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
         number); embedded images are written once as PNG into OUT/images/.
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

            summary = import_mfish(args.source, args.out, limit=args.limit, progress=not args.quiet)
        elif args.format == "labelme":
            from chromoseg.data.importers.labelme import import_labelme

            summary = import_labelme(args.source, args.out, limit=args.limit, progress=not args.quiet)
        else:
            from chromoseg.data.importers.voc import import_voc

            summary = import_voc(args.source, args.out, progress=not args.quiet)
    except FileNotFoundError as err:
        raise CliError(str(err)) from err
    print(json.dumps(summary, indent=1))
    print(f"written to {args.out} (problems, if any, in {args.out}/problems.json)")
    return 0


def _cmd_show(args) -> int:
    from chromoseg.cli import CliError
    from chromoseg.data.show import show_dataset

    try:
        written, problems = show_dataset(args.annotations, args.out, limit=args.limit, names=args.image,
                                         image_root=args.image_root, progress=not args.quiet)
    except ValueError as err:
        raise CliError(str(err)) from err
    print(f"wrote {len(written)} PNG files to {args.out}" + (f"; {problems.summary()}" if len(problems) else ""))
    return 0 if written or not problems else 1


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


def register(sub) -> None:
    p = sub.add_parser("data", help="import data sets, draw and check annotations",
                       description="Work with annotated chromosome data sets.")
    dsub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")

    imp = dsub.add_parser("import", help="import a public set into chromoseg's format", description=IMPORT_HELP,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    imp.add_argument("format", choices=("mfish", "labelme", "voc"), help="the source format")
    imp.add_argument("source", help="folder of the source set")
    imp.add_argument("--out", required=True, help="output folder for the JSON files and reports")
    imp.add_argument("--limit", type=positive_int, default=None, help="import only the first N images (mfish, labelme; for a quick look)")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
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

    try:
        from chromoseg.data.build_cli import add_build_parser
    except ModuleNotFoundError as err:
        if err.name != "chromoseg.data.build_cli":
            raise
    else:
        add_build_parser(dsub)

    p.set_defaults(func=lambda args: (p.print_help(), 1)[1])
