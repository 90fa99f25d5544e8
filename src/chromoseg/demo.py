"""``chromoseg demo``: the main job on the shipped example metaphase.

Until a trained model ships, the demo imports the shipped M-FISH sample (``examples/adir-mfish``),
derives its chromosome instances from the expert label map and draws them, so a new user sees the
data, the rotated boxes and the endpoints that the models learn from.
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
    print(f"example: {src}")
    print(f"{summary['instances']} chromosome instances in {summary['images']} metaphase(s); "
          f"count matches the karyotype in {summary['images_count_matches_karyotype']}")
    for p in written:
        print(f"wrote {p}")
    print(f"dataset (COCO JSON with rotated boxes and endpoints): {out / 'dataset' / 'all.json'}")
    return 0 if written else 1


def register(sub) -> None:
    p = sub.add_parser("demo", help="run on the shipped example metaphase",
                       description="Run chromoseg on the shipped example (an M-FISH DAPI metaphase with its expert "
                                   "label map): derive its instances and draw them to PNG.")
    p.add_argument("--example", default=str(EXAMPLE), help="example folder (default: the shipped one)")
    p.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    p.set_defaults(func=_cmd_demo)
