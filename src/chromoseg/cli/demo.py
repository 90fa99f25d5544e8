"""``chromoseg demo``: the main job on the shipped example metaphase.

Runs ``chromoseg predict`` with the shipped model (:mod:`chromoseg.weights`) on the shipped M-FISH
DAPI example (``examples/adir-mfish``) and writes its overlay, karyogram and report; then, as a
reference to check the model against by eye, the same karyogram, counts and report made from the
example's expert label map (imported as ``chromoseg data import mfish`` does) in ``OUT/expert``, whose
``images.json`` records how each image was read (channel, pixel size, orientation), as predict's does; and
the shipped G-band model on the G-band example (``examples/cil-gband``, a CIL test metaphase) in
``OUT/gband``.
"""
from __future__ import annotations

from pathlib import Path

from chromoseg.cli import COMMANDS

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "adir-mfish"
GBAND_EXAMPLE = EXAMPLE.parent / "cil-gband"


def _cmd_demo(args) -> int:
    from chromoseg.cli import CliError
    from chromoseg.data.importers.mfish import import_mfish
    from chromoseg.data.io import list_images
    from chromoseg.karyotype.show import show_dataset
    from chromoseg.engine.predict import Predictor, StainRouter, predict_paths

    src = Path(args.example)
    if not src.is_dir():
        raise CliError(f"{src}: the example folder is missing (it ships in the repository's examples/ folder)")
    out = Path(args.out)
    images = [p for p in list_images([str(src)]) if p.stem.endswith("D")]  # the DAPI images
    if not images:
        raise CliError(f"{src}: no DAPI image (*D.tif) in the example folder")
    auto = args.model in (None, "auto")  # each image to the shipped model of its stain, as predict's default
    try:  # the file's recommendations
        predictor = StainRouter.shipped(device="cpu") if auto else Predictor.from_checkpoint(args.model, device="cpu")
    except (FileNotFoundError, ValueError) as err:
        raise CliError(str(err)) from err
    pred = predict_paths(predictor, images, out, progress=not args.quiet)
    ref = out / "expert"
    summary = import_mfish(src, ref / "dataset", progress=False)
    written, _ = show_dataset(ref / "dataset" / "all.json", ref, progress=False)
    rows = _karyotype(ref / "dataset" / "all.json", ref)
    print(f"example: {src}")
    import json

    model_rows = json.loads((out / "images.json").read_text())["images"]
    counted = chromosome_counts(out)
    for img in model_rows:
        stem = Path(img["file_name"]).stem
        n = counted.get(img["id"], f"{img['instances']} chromosomes")
        print(f"model {_model_name(img, args.model)}: {n}, karyotype "
              f"{img.get('summary', '?')}; overlay {out / (stem + '.overlay.png')}, karyogram "
              f"{out / (stem + '.karyogram.png')}")
    for row in rows:
        print(f"expert annotations: {summary['instances']} chromosomes, karyotype {row['counts'].summary} "
              f"(known: {row['truth']}); karyogram {row['karyogram']}")
    for line in _agreement(model_rows, rows):
        print(line)
    print(f"report: {out / 'report.html'} (expert reference: {ref / 'report.html'})")
    gband = list_images([str(GBAND_EXAMPLE)]) if auto and GBAND_EXAMPLE.is_dir() else []
    if gband:  # the G-band example, by the same router: the G-band model, told by the image's polarity
        predict_paths(predictor, gband, out / "gband", progress=not args.quiet)
        counted = chromosome_counts(out / "gband")
        for img in json.loads((out / "gband" / "images.json").read_text())["images"]:
            stem = Path(img["file_name"]).stem
            n = counted.get(img["id"], f"{img['instances']} chromosomes")
            print(f"G-band example, model {_model_name(img, 'auto')}: {n}, "
                  f"karyotype "
                  f"{img.get('summary', '?')}; "
                  f"karyogram {out / 'gband' / (stem + '.karyogram.png')}")
    return 0 if pred["images"] and written else 1


def chromosome_counts(out_dir) -> dict:
    """Per image id of a predict folder, its chromosomes as the report counts them: ``46 chromosomes``,
    with the detections the not-a-chromosome rule left out (``not_chromosome`` in results.json) said
    apart (``(+1 left out as not chromosomes: nuclei?)``), not counted as chromosomes."""
    import json

    from chromoseg.cli.predict import chromosomes_text

    try:
        results = json.loads((Path(out_dir) / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    per: dict = {}
    for r in results if isinstance(results, list) else []:
        if isinstance(r, dict):
            n, out = per.get(r.get("image_id"), (0, 0))
            per[r.get("image_id")] = (n + 1, out + bool(r.get("not_chromosome")))
    return {iid: chromosomes_text(n, out) for iid, (n, out) in per.items()}


def _model_name(image_row: dict, asked) -> str:
    """The model an image went to, as images.json records it (``auto -> gband`` when routed by stain)."""
    name = (image_row.get("model") or {}).get("name") or str(asked)
    return f"auto -> {name}" if asked in (None, "auto") else name


def _agreement(model_images: list[dict], expert_rows: list[dict]) -> list[str]:
    """Per example metaphase, one line that says whether the model's karyotype agrees with the expert's
    and with the known one, and where to look when it does not."""
    expert = {Path(str(r.get("image", ""))).stem: r for r in expert_rows}
    out = []
    for img in model_images:
        stem = Path(img["file_name"]).stem
        r = expert.get(stem)
        ours = img.get("summary")
        if r is None or not ours:
            continue
        theirs, known = r["counts"].summary, r.get("truth")
        if ours.replace("?", "") == theirs.replace("?", ""):
            out.append(f"{stem}: the model's karyotype {ours} agrees with the expert annotations'"
                       + (f" (known: {known})" if known else ""))
            continue
        out.append(f"{stem}: the model and the expert DISAGREE: model {ours}, expert annotations {theirs}"
                   + (f", known karyotype {known}" if known else "")
                   + ": the model's line is a draft to check, compare the karyograms (the model's card says how "
                     "often it is right)")
    return out


def _karyotype(dataset, out: Path) -> list[dict]:
    """Karyogram, counts and report of every image of a dataset, from its annotations; ``images.json``
    records how each image was read (channel, pixel size, orientation: ``image_record``, as predict's
    does) with its karyotype line and flags, and ``problems.json`` the readers' warnings (kept)."""
    import json

    from chromoseg.atomic import write_text
    from chromoseg.data.coco import load_coco, resolve_image_path
    from chromoseg.data.io import image_record, read_image_with_info
    from chromoseg.data.report import ProblemLog
    from chromoseg.karyotype.layout import instances_from_coco
    from chromoseg.karyotype.pipeline import analyse_metaphase, truth_for
    from chromoseg.karyotype.report import write_report

    data = load_coco(dataset)
    problems = ProblemLog()
    rows, records = [], []
    for img in data["images"]:
        path = resolve_image_path(img["file_name"], Path(dataset).parent)
        image, info = read_image_with_info(path)  # the default channel rule, as the importer read it
        for w in info["warnings"]:
            problems.add(path, w, action="kept", kind="read-warning")
        insts = instances_from_coco(data, img["id"], img["height"], img["width"])
        row = analyse_metaphase(image, insts, path.name, out, path.stem, truth=truth_for(img, path),
                                overlay=False)
        shown = out / f"{path.stem}.png"  # the overlay `data show` drew just before
        if shown.is_file():
            row["overlay"] = str(shown)
        rows.append(row)
        records.append({"id": img["id"], "file_name": str(path), "height": int(image.shape[0]),
                        "width": int(image.shape[1]), "instances": len(insts), "stem": path.stem,
                        **image_record(info), "summary": row["counts"].summary, "flags": row["flags"]})
    write_report(rows, out / "report.html", out / "report.csv", title="chromoseg demo (expert annotations)",
                 note="instances derived from the expert label map, not from a model")
    write_text(out / "images.json", json.dumps({"images": records, "source": "expert annotations",
                                                "dataset": str(dataset)}, indent=1))
    problems.write(out / "problems.json")
    return rows


def register(sub) -> None:
    p = sub.add_parser("demo", help=COMMANDS["demo"][1],
                       description="Run `chromoseg predict` with the shipped model on the shipped example (an M-FISH "
                                   "DAPI metaphase) and write its overlay, karyogram and report; then the same from "
                                   "the example's expert label map in OUT/expert, to compare by eye; and the G-band "
                                   "model on the G-band example (examples/cil-gband) in OUT/gband.")
    p.add_argument("--example", default=str(EXAMPLE), help="example folder (default: the shipped one)")
    p.add_argument("--model", default="auto", metavar="NAME|PATH",
                   help="auto (default): each image to the shipped model of its stain, as `chromoseg predict`; "
                        "a name or file: that model for the M-FISH example only")
    p.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_demo)
