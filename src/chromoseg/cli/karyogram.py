"""``chromoseg karyogram``: karyograms, overlays, counts/ISCN summaries and an HTML report for a set.

Heavy imports (numpy, OpenCV, Pillow) happen inside the command function so that ``chromoseg --help``
stays fast.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from chromoseg.cli import COMMANDS, positive_int, unit_float

DESCRIPTION = """\
Build a karyogram for every metaphase of a chromoseg COCO dataset (ground truth) or of a results
file (predictions), with an overlay, the per-class counts, an ISCN-style summary and flags, and one
HTML report + CSV for the whole set.

For each image it writes into OUT:
  NAME.karyogram.png   chromosomes cut out with their masks, straightened along their medial
                       axis (--no-straighten: only turned upright, long axis vertical), short arm
                       up by a heuristic, one common scale, rows 1-5 / 6-12 / 13-18 /
                       19-22 X Y, labels under each class, homologues side by side, unassigned
                       chromosomes in a row of their own. Fluorescence (DAPI) images are inverted so
                       that chromosomes are dark on white, like a classic karyogram.
  NAME.overlay.png     the metaphase with coloured masks, rotated boxes, endpoints and class labels,
                       under a title (image, model and score threshold of predictions, count) and a
                       legend, as `chromoseg predict` draws it.
and for the set:
  summaries.tsv        one line per image: name, ISCN summary, total, flags, truth (a summary that
                       differs from the known karyotype is flagged too)
  report.html          self-contained page (images embedded, no network), flagged metaphases first
  report.csv           the same rows as a table
  problems.json        images that could not be processed (they are skipped, never silently;
                       each also named on stderr as `skipped: NAME`), as `chromoseg predict` writes it

Exit status: 0 all images done, 3 some skipped, 1 none could be done, 2 bad command line or
unusable input (as every chromoseg command).

The summary is ISCN-style: total count, sex chromosomes, then one -N / +N per missing / extra
autosome ('46,XY', '45,XY,-8', '47,XX,+21', '45,X', '47,XXY'); '?' (e.g. '-?8') marks a change that
a weak chromosome could explain. Chromosomes without a class count in the total only.

Marks: orange frame = score below --min-score; magenta frame = the two best class probabilities
differ by less than --min-margin; grey '?' = orientation unsure. Flags in the summary say where the
evidence is weak (low scores, unsure classes, unassigned chromosomes, a count far from 46, a class
with 0 or >= 4 chromosomes, odd sex chromosomes).
"""

EPILOG = """\
examples:
  # ground truth: what the counting/summary logic makes of the annotations
  chromoseg karyogram datasets/mfish/test.json --images ../shared/data/adir-mfish --out out/kary_gt
  # predictions (COCO results list with 'score', optional 'class_scores', 'rbox', 'endpoints')
  chromoseg karyogram datasets/mfish/test.json --results out/pred/results.json --out out/kary_pred
  # a few images only, forcing no inversion
  chromoseg karyogram data.json --out out/k --limit 5 --invert no

Image files are looked up as the dataset's file_name under each --images folder in turn, then
beside the JSON file. The known karyotype of an image (the dataset's 'karyotype' field, or the
case_info.txt beside an M-FISH image) is shown as 'truth' in the report.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "karyogram",
        help=COMMANDS["karyogram"][1],
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("annotations", metavar="ANNOTATIONS.json",
                   help="chromoseg COCO dataset: its 'images' list says which images to process (its "
                        "annotations are used unless --results is given)")
    p.add_argument("--results", metavar="RESULTS.json",
                   help="predictions as a COCO results list (or a dict with 'annotations'), image_id as in "
                        "ANNOTATIONS.json; keys: segmentation (RLE), category_id (0 = unassigned), score, "
                        "optional class_scores (24 probabilities), rbox, endpoints")
    p.add_argument("--images", nargs="+", metavar="DIR", default=[],
                   help="folder(s) where the images' file_name is looked up (default: beside the JSON)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N", help="only the first N images")
    p.add_argument("--min-score", type=unit_float, default=0.7,
                   help="chromosomes scoring below this are weak evidence (default 0.7)")
    p.add_argument("--min-margin", type=unit_float, default=0.2,
                   help="class-probability margin below which a class is unsure (default 0.2)")
    p.add_argument("--score-threshold", type=unit_float, default=0.0,
                   help="drop predictions scoring below this before counting (default 0: keep all)")
    p.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                   help="invert grey values in the karyogram (auto: when chromosomes are brighter than "
                        "the background, e.g. DAPI)")
    p.add_argument("--chrom-height", type=positive_int, default=150,
                   help="height in pixels of the longest chromosome in the karyogram (default 150)")
    p.add_argument("--straighten", action=argparse.BooleanOptionalAction, default=True,
                   help="resample each chromosome along its medial axis (its mask's skeleton between its "
                        "tips), so bent ones stand straight at their true length as karyograms are read "
                        "(default: on; a mask with no clear axis - tiny, a ring, a blob - is shown as cut). "
                        "--no-straighten shows every chromosome only rotated upright, as the mask cuts it: "
                        "for checking a mask's shape itself")
    p.add_argument("--no-progress", "--quiet", action="store_true", dest="no_progress",
                   help="no progress bar (--quiet, as in predict and data import, is the same)")
    p.set_defaults(func=run_karyogram)


def _display_name(file_name: str, roots: list[Path]) -> str:
    """The file name relative to an --images root, else its last two path parts (folder/file)."""
    p = Path(file_name)
    if p.is_absolute():
        for r in roots:
            try:
                return str(p.relative_to(r.resolve()))
            except ValueError:
                continue
        return str(Path(*p.parts[-2:]))
    return file_name


def _safe_name(name: str) -> str:
    p = Path(name)
    parts = [x for x in p.with_suffix("").parts if x not in ("/", "..", ".")]
    return "__".join(parts) or "image"


def _find_image(file_name: str, roots: list[Path]) -> Path | None:
    p = Path(file_name)
    if p.is_absolute():
        return p if p.is_file() else None
    for r in roots:
        q = r / p
        if q.is_file():
            return q
    return None


def _predict_records(results_path: Path) -> dict[str, dict]:
    """What ``chromoseg predict`` recorded beside its results (``images.json``) about each image's
    model and score threshold, keyed by the file name as given and by its last part: the overlay's
    title says them. Empty without that file."""
    import json

    try:
        meta = json.loads(results_path.with_name("images.json").read_text(encoding="utf-8"))
        images = [im for im in meta["images"] if isinstance(im, dict) and isinstance(im.get("file_name"), str)]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    out: dict[str, dict] = {}
    for im in images:
        model = im.get("model") if isinstance(im.get("model"), dict) else meta.get("model")
        inference = im.get("inference") if isinstance(im.get("inference"), dict) else meta.get("inference")
        name = model.get("name") if isinstance(model, dict) else None
        rec = {"model": Path(str(name)).name if name else None,
               "score_threshold": inference.get("score_threshold") if isinstance(inference, dict) else None}
        out[im["file_name"]] = rec
        out.setdefault(Path(im["file_name"]).name, rec)
    return out


def _overlay_caption(img: dict, results: list | None, records: dict, score_threshold: float) -> dict:
    """The overlay title's model and score threshold: none for annotations; for predictions the model
    predict recorded and the higher of its threshold and --score-threshold."""
    if results is None:
        return {}
    file_name = str(img.get("file_name"))
    rec = records.get(file_name) or records.get(Path(file_name).name) or {}
    thresholds = [t for t in (rec.get("score_threshold"), score_threshold or None) if isinstance(t, (int, float))]
    return {"model": rec.get("model"), "score_threshold": max(thresholds) if thresholds else None}


def run_karyogram(args) -> int:
    import json
    import sys

    from tqdm import tqdm

    from chromoseg.cli import EXIT_NOTHING_DONE, EXIT_OK, EXIT_PARTIAL, CliError
    from chromoseg.data.coco import load_coco
    from chromoseg.data.io import ImageReadError, read_image
    from chromoseg.data.report import ProblemLog
    from chromoseg.karyotype.layout import instances_from_coco, straightening
    from chromoseg.karyotype.pipeline import analyse_metaphase, error_row, truth_for
    from chromoseg.karyotype.report import write_report

    ann_path = Path(args.annotations)
    problems = ProblemLog()
    try:
        data = load_coco(ann_path, problems)
    except ValueError as err:
        raise CliError(str(err)) from err
    results = None
    records: dict[str, dict] = {}
    if args.results:
        rp = Path(args.results)
        if not rp.is_file():
            raise CliError(f"{rp}: no such results file")
        try:
            raw = json.loads(rp.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CliError(f"{rp}: not valid JSON ({err})") from err
        records = _predict_records(rp)
        results = raw.get("annotations") if isinstance(raw, dict) else raw
        if not isinstance(results, list):
            raise CliError(f"{rp}: expected a COCO results list (or a dict with an 'annotations' list)")
        from chromoseg.data.coco import ImageIndex

        index = ImageIndex(data["images"])  # predict's file_name decides the image, not its own image ids
        results = [{**r, "image_id": index.image_of(r)} for r in results
                   if isinstance(r, dict) and float(r.get("score", 1.0) or 0.0) >= args.score_threshold]
    for d in args.images:
        if not Path(d).is_dir():
            raise CliError(f"--images {d}: no such folder")
    roots = [Path(d) for d in args.images] + [ann_path.parent]
    images = data["images"][: args.limit] if args.limit else data["images"]
    if not images:
        raise CliError(f"{ann_path}: no images to process")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    invert = {"auto": None, "yes": True, "no": False}[args.invert]
    rows = []
    lines = ["image\tsummary\ttotal\tflags\ttruth"]
    # analyse_metaphase renders its karyogram with the straightening this context says
    with straightening(args.straighten):
        for img in tqdm(images, desc="karyogram", unit="img", disable=args.no_progress):
            name = _display_name(str(img["file_name"]), roots)
            path = _find_image(str(img["file_name"]), roots)
            truth = truth_for(img, path)
            try:
                if path is None:
                    raise ImageReadError(img["file_name"],
                                         "image file not found under " + ", ".join(str(r) for r in roots))
                image = read_image(path)
                if image.shape[:2] != (int(img["height"]), int(img["width"])):
                    raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}, the dataset says "
                                     f"{img['width']}x{img['height']}")
                source = results if results is not None else data
                instances = instances_from_coco(source, img["id"], int(img["height"]), int(img["width"]))
                row = analyse_metaphase(image, instances, name, out, _safe_name(name), truth=truth,
                                        chrom_height=args.chrom_height, invert=invert, min_score=args.min_score,
                                        min_margin=args.min_margin,
                                        overlay_title=_overlay_caption(img, results, records, args.score_threshold))
                c = row["counts"]
                lines.append(f"{name}\t{c.summary}\t{c.total}\t{'; '.join(row['flags'])}\t{truth or ''}")
            except (ImageReadError, ValueError, OSError) as err:
                msg = str(err)
                if msg.startswith(f"{img['file_name']}: ") or msg.startswith(f"{path}: "):
                    msg = msg.split(": ", 1)[1]
                problems.add(name, msg, kind="image")
                row = error_row(name, err, truth)
                lines.append(f"{name}\t\t\terror: {err}\t{truth or ''}")
            rows.append(row)
    (out / "summaries.tsv").write_text("\n".join(lines) + "\n")
    source_note = f"predictions {args.results}" if args.results else f"annotations {ann_path} (ground truth)"
    source_note += ("; chromosomes straightened along their medial axis" if args.straighten
                    else "; chromosomes as cut (--no-straighten)")
    html_path, csv_path = write_report(rows, out / "report.html", out / "report.csv",
                                       title=f"chromoseg karyotypes: {ann_path.name}", note=source_note)
    n_err = sum(1 for r in rows if r.get("error"))
    if len(problems):
        problems.write(out / "problems.json")
        print(f"{len(problems)} problem(s), see {out / 'problems.json'}: {problems.summary()}")
    n_flag = sum(1 for r in rows if not r.get("error") and r["flags"])
    print(f"{len(rows) - n_err} of {len(rows)} images processed, {n_flag} flagged, {n_err} skipped; "
          f"report: {html_path}  table: {csv_path}")
    for r in rows:
        if r.get("error"):
            print(f"skipped: {r['image']}", file=sys.stderr)
    if n_err == len(rows):
        return EXIT_NOTHING_DONE
    return EXIT_PARTIAL if n_err else EXIT_OK
