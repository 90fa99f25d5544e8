"""``chromoseg demo``: the main job on the shipped example metaphase.

Until a trained model ships, the demo imports the shipped M-FISH sample (``examples/adir-mfish``),
derives its chromosome instances from the expert label map and draws them, so a new user sees the
data, the rotated boxes and the endpoints that the models learn from; then it builds the karyogram,
the counts and the ISCN-style summary from those instances and writes the HTML report, exactly as
``chromoseg predict`` does from a model's instances.
"""
from __future__ import annotations

from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "adir-mfish"


def _cmd_demo(args) -> int:
    from chromoseg.cli import CliError
    from chromoseg.data.importers.mfish import import_mfish
    from chromoseg.data.show import show_dataset

    src = Path(args.example)
    if not src.is_dir():
        raise CliError(f"{src}: the example folder is missing (it ships in the repository's examples/ folder)")
    out = Path(args.out)
    summary = import_mfish(src, out / "dataset", progress=False)
    written, problems = show_dataset(out / "dataset" / "all.json", out, progress=False)
    rows = _karyotype(out / "dataset" / "all.json", out)
    print(f"example: {src}")
    print(f"{summary['instances']} chromosome instances in {summary['images']} metaphase(s); "
          f"count matches the karyotype in {summary['images_count_matches_karyotype']}")
    for p in written:
        print(f"wrote {p}")
    for row in rows:
        print(f"karyotype of {row['image']}: {row['counts'].summary} (known: {row['truth']}); karyogram: {row['karyogram']}")
    print(f"dataset (COCO JSON with rotated boxes and endpoints): {out / 'dataset' / 'all.json'}")
    print(f"report: {out / 'report.html'}")
    return 0 if written else 1


def _karyotype(dataset, out: Path) -> list[dict]:
    """Karyogram, counts and report of every image of a dataset, from its annotations."""
    from chromoseg.data.coco import load_coco, resolve_image_path
    from chromoseg.data.io import read_image
    from chromoseg.karyotype.layout import instances_from_coco
    from chromoseg.karyotype.pipeline import analyse_metaphase, truth_for
    from chromoseg.karyotype.report import write_report

    data = load_coco(dataset)
    rows = []
    for img in data["images"]:
        path = resolve_image_path(img["file_name"], Path(dataset).parent)
        insts = instances_from_coco(data, img["id"], img["height"], img["width"])
        row = analyse_metaphase(read_image(path), insts, path.name, out, path.stem, truth=truth_for(img, path),
                                overlay=False)
        shown = out / f"{path.stem}.png"  # the overlay `data show` drew just before
        if shown.is_file():
            row["overlay"] = str(shown)
        rows.append(row)
    write_report(rows, out / "report.html", out / "report.csv", title="chromoseg demo (expert annotations)",
                 note="instances derived from the expert label map, not from a model")
    return rows


def register(sub) -> None:
    p = sub.add_parser("demo", help="run on the shipped example metaphase",
                       description="Run chromoseg on the shipped example (an M-FISH DAPI metaphase with its expert "
                                   "label map): derive its instances and draw them to PNG.")
    p.add_argument("--example", default=str(EXAMPLE), help="example folder (default: the shipped one)")
    p.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    p.set_defaults(func=_cmd_demo)
