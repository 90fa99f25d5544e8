"""``chromoseg export``: a training checkpoint's weights as the compact model file that predict loads."""
from __future__ import annotations

import argparse

from chromoseg.cli import COMMANDS, positive_int, unit_float
from chromoseg.data.stain import STAINS


def register(subparsers) -> None:
    e = subparsers.add_parser(
        "export", help=COMMANDS["export"][1],
        description="Write the weights of a `chromoseg train` checkpoint (best.pt / last.pt) as a safetensors "
                    "file, half precision by default, with the build arguments in its metadata (no optimiser "
                    "or RNG state): what `chromoseg predict --model FILE` loads and what chromoseg ships.",
        epilog="example:\n  chromoseg export runs/ermr/best.pt --out models/ermr.safetensors",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("checkpoint", help="best.pt or last.pt of a `chromoseg train` run")
    e.add_argument("--out", required=True, metavar="FILE", help="output .safetensors file")
    e.add_argument("--fp32", action="store_true", help="keep float32 weights (default: float16, half the size)")
    e.add_argument("--default-score", choices=["class", "object"], default=None,
                   help="the confidence `predict` uses with this model unless --score is given (default: class)")
    e.add_argument("--default-score-threshold", type=unit_float, default=None, metavar="T",
                   help="the confidence threshold `predict` uses with this model unless --score-threshold is given "
                        "(default: the paper's 0.5); choose it on a validation split (e.g. by count error)")
    e.add_argument("--default-classes", choices=["independent", "karyotype"], default=None,
                   help="record which class rule predict should use with this model by default")
    e.add_argument("--default-proposals", type=positive_int, default=None, metavar="N",
                   help="region proposals per image `predict` keeps after the RPN with this model unless "
                        "--proposals is given (default: the model's own, 300); choose it on a validation split")
    e.add_argument("--default-rescore", choices=["on", "off"], default=None,
                   help="whether `predict` scores each detection on its own final box with this model unless "
                        "--rescore is given (default: off, the paper's scoring); choose it on a validation split")
    e.add_argument("--train-pixel-size", type=float, default=None, metavar="UM",
                   help="micrometres per pixel of the network input (after its resize) the model was trained "
                        "at; predict then brings every image whose pixel size is known (the file's or "
                        "--pixel-size) to it instead of framing it (default: none recorded: images are framed)")
    e.add_argument("--stain", choices=STAINS, default=None,
                   help="what the model was trained on: fluorescence (bright chromosomes on a dark background: "
                        "DAPI, Q-band) or brightfield (dark on light: G-band); predict then refuses images of the "
                        "other polarity with a clear message")
    e.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    import math
    from pathlib import Path

    from chromoseg.cli import CliError
    from chromoseg.engine.checkpoint import export_model

    if Path(args.out).suffix != ".safetensors":
        raise CliError(f"--out {args.out}: the file name must end in .safetensors")
    try:
        meta = {k: v for k, v in (("default_score", args.default_score), ("stain", args.stain),
                                  ("default_classes", args.default_classes)) if v}
        if args.default_score_threshold is not None:
            meta["default_score_threshold"] = str(args.default_score_threshold)
        if args.default_rescore is not None:
            meta["default_rescore"] = "true" if args.default_rescore == "on" else "false"
        if args.train_pixel_size is not None:
            if not (math.isfinite(args.train_pixel_size) and args.train_pixel_size > 0):
                raise CliError(f"--train-pixel-size {args.train_pixel_size}: give micrometres per pixel (> 0)")
            meta["train_pixel_size_um"] = repr(float(args.train_pixel_size))
        if args.default_proposals is not None:
            meta["default_proposals"] = str(args.default_proposals)
        info = export_model(args.checkpoint, args.out, half=not args.fp32, metadata=meta or None)
    except (FileNotFoundError, ValueError) as err:
        raise CliError(str(err)) from None
    print(f"wrote {info['path']}: {info['parameters'] / 1e6:.2f} M parameters, {info['bytes'] / 1e6:.1f} MB "
          f"({'fp32' if args.fp32 else 'fp16'}), epoch {info['epoch']}")
    return 0
