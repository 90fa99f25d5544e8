"""``chromoseg predict``: run a trained model over images, folders or globs."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chromoseg.cli import COMMANDS, nonneg_int, positive_float, positive_int, unit_float

PREDICT_HELP = """\
Segment and classify the chromosomes of metaphase images with a trained model: by default each
image with the shipped model of its stain, told by its polarity (--model auto: bright chromosomes on
dark, DAPI / Q-band: `mfish`; dark on light, G-band: `gband`; see their cards in chromoseg/weights/),
so a folder of both is predicted in one run; --model mfish or gband for one of them, or --model PATH,
any checkpoint of `chromoseg train` or file of `chromoseg export`. images.json records the model
each image used.

Inference follows the paper (section III): masks are computed for the top 100 detections, redundant
results are removed by NMS at mask level, and detections under a confidence score threshold are dropped:
the threshold the model file recommends ({shipped_thresholds}), else the paper's {paper_threshold:g}.
Each step can be changed below; images.json records what each image was made with, and
`chromoseg evaluate` scores at that threshold by default.

Writes into --out:
  results.json          COCO results for all images (RLE masks, bbox, rbox, endpoints, class, score);
                        `chromoseg evaluate GT.json OUT/results.json` scores it against annotations
  images.json           the images (id, file name, size) and, per image, the model (name, file,
                        SHA-256 prefix, stain) and the inference settings that made it, the channel
                        it was read from (channel, channel_index, the file's channels) and its pixel
                        size (pixel_size_um, micrometres per pixel, and pixel_size_source: the file's
                        OME/ImageJ/TIFF tags, or "given (--pixel-size)"; null when unknown), and how
                        it reached the network: frame, scale and scale_rule (pixel size, framing
                        or whole image)
  NAME.labels.tif       16-bit instance label image (0 background, k = k-th instance by score)
  NAME.overlay.png      the image with each chromosome's mask, rotated box, endpoints and class
  NAME.karyogram.png    the chromosomes cut out, turned upright and laid out in the standard rows
  report.html           one self-contained page: a row per metaphase with overlay, karyogram, counts,
                        ISCN-style summary and flags, flagged metaphases first (report.csv: same rows)
  problems.json         files that could not be used ("action": "skipped"; the rest goes on), and
                        what the readers warned about in files that were used ("action": "kept",
                        e.g. strip tags listing a strip that is not in the file, or the first of
                        several channels read): these do not change the exit status

Every file is written atomically; results.json, images.json and the report are brought up to date
every few seconds and when the run ends, fails or is interrupted (Ctrl-C), so a run that is stopped
leaves valid files for the images it finished (a hard kill: all but its last few seconds);
--skip-existing continues it. Exit status: 0 all images done (warnings kept in problems.json do not
count), 3 some skipped (listed on stderr and in problems.json), 1 none could be done, 2 bad command
line or unusable input (a file that does not exist, a folder without images: said before the model
loads).

Images: TIFF (classic and BigTIFF, any codec, 1-16-bit and float, OME-TIFF, ImageJ), PNG, JPEG, BMP.
The model sees one grey channel: a grey image as it is, colour (RGB, palette) converted to grey, and
of a file with several channels (an OME-TIFF of DAPI, FITC, Cy3; a multi-page TIFF) the first, with a
warning in problems.json: --channel chooses another.

In a folder (or a glob) only metaphase images are predicted: label maps, class maps and masks (an
image of at most 64 grey values, mostly 0, like the M-FISH expert's *K.tif beside each *D.tif) and
predict's own outputs are left out with a note.

examples:
  chromoseg predict metaphase.tif                       # the shipped model of its stain, writes out/predict
  chromoseg predict scans/                              # a folder of DAPI and G-band images: each its own model
  chromoseg predict metaphase.tif --model runs/ermr/best.pt --out out/pred
  chromoseg predict 'scans/*.tif' --model runs/ermr/best.pt --out out/pred --device cuda --batch-size 4
  chromoseg predict cells.ome.tif --channel dapi --pixel-size 0.065   # DAPI of a 3-channel OME-TIFF
"""


def shipped_recommendations() -> dict[str, dict]:
    """Each shipped model's recommendations (the metadata in its safetensors header), read without
    torch so that --help stays fast: ``{name: {"default_score_threshold": "0.2", ...}}``."""
    import json
    import struct

    from chromoseg.weights import HERE, SHIPPED

    out = {}
    for name, (file_name, *_rest) in SHIPPED.items():
        try:
            with open(HERE / file_name, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                out[name] = dict(json.loads(fh.read(n)).get("__metadata__") or {})
        except (OSError, ValueError, struct.error):
            continue
    return out


def _shipped_thresholds() -> str:
    parts = [f"{name} {meta['default_score_threshold']}" for name, meta in shipped_recommendations().items()
             if meta.get("default_score_threshold")]
    return "the shipped models: " + ", ".join(parts) if parts else "none for the shipped models"


def expand_inputs(inputs: list[str]) -> tuple[list, set]:
    """The image paths of predict's inputs and the set of those named as files. Every input must name
    something: a file that does not exist, a folder without images or a glob that matches none is an
    unusable input (``CliError``, exit 2), found before the model loads or the output folder is made."""
    from chromoseg.cli import CliError
    from chromoseg.data.io import list_images

    paths, seen, named, bad = [], set(), set(), []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = list_images([item])
            if not found:
                bad.append(f"{item}: a folder with no image files (TIFF, PNG, JPEG, BMP)")
        elif p.exists() or p.is_symlink():  # a file named as it is (a broken link is reported when read)
            found = [p]
            named.add(str(p))
        elif any(ch in item for ch in "*?["):
            found = list_images([item])
            if not found:
                bad.append(f"{item}: no image file matches this pattern")
        else:
            found = []
            bad.append(f"{item}: no such file or folder")
        paths.extend(q for q in found if q not in seen)
        seen.update(found)
    if bad:
        raise CliError("; ".join(bad))
    return paths, named


def _interrupted(args) -> str:
    """What to say after Ctrl-C: what is saved, and the command that continues the run."""
    import json
    import shlex

    try:
        done = len(json.loads((Path(args.out) / "images.json").read_text())["images"])
    except (OSError, ValueError, KeyError, TypeError):
        done = 0
    argv = [a for a in sys.argv[1:] if a != "--skip-existing"] if sys.argv[1:2] == ["predict"] else None
    again = ("chromoseg " + " ".join(shlex.quote(a) for a in argv) + " --skip-existing") if argv else \
        "the same command with --skip-existing"
    return (f"interrupted: the {done} image(s) finished so far are saved in {args.out} (results.json, images.json, "
            f"report); to continue without predicting them again, run: {again}")


def chromosomes_text(n: int, left_out: int) -> str:
    """``46 chromosomes``, with what the not-a-chromosome rule left out said apart: ``n`` counts all
    the detections (results.json's entries), ``left_out`` those of them marked ``not_chromosome``."""
    text = f"{n - left_out} chromosomes"
    return text + (f" (+{left_out} left out as not chromosomes: nuclei?)" if left_out else "")


def _left_out(out_dir, n_this_run: int) -> tuple[int, int]:
    """How many of OUT/results.json's detections the not-a-chromosome rule marked: (among this run's,
    the last ``n_this_run`` entries, the writer appends them after the earlier ones; in all)."""
    import json

    try:
        results = json.loads((Path(out_dir) / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0, 0
    if not isinstance(results, list):
        return 0, 0
    marked = [isinstance(r, dict) and bool(r.get("not_chromosome")) for r in results]
    return sum(marked[len(marked) - n_this_run:]) if n_this_run else 0, sum(marked)


def _cmd_predict(args) -> int:
    # the inputs first: a missing file or an empty folder is said in a second, not after torch's import
    paths, named = expand_inputs(args.inputs)

    import torch

    from chromoseg.cli import EXIT_NOTHING_DONE, EXIT_OK, EXIT_PARTIAL, CliError
    from chromoseg.engine.predict import InferenceConfig, Predictor, StainRouter, predict_paths

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = InferenceConfig(top_k=args.top_k, mask_threshold=args.mask_threshold, mask_nms_iou=args.mask_nms_iou,
                          score_threshold=args.score_threshold, score=args.score, classes=args.classes,
                          crop_classifier=not args.no_crop_classifier, proposals=args.proposals, amp=args.amp,
                          frame={"auto": None, "on": True, "off": False}[args.frame],
                          rescore={"auto": None, "on": True, "off": False}[args.rescore],
                          endpoint_snap=args.endpoint_snap)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CliError("--device cuda: no CUDA device is available here")
    try:
        if args.model == "auto":
            predictor = StainRouter.shipped(cfg, device=args.device)
        else:
            predictor = Predictor.from_checkpoint(args.model, cfg, device=args.device)
    except (FileNotFoundError, ValueError) as err:
        raise CliError(str(err)) from err
    try:
        summary = predict_paths(predictor, paths, args.out, batch_size=args.batch_size,
                                overlays=not args.no_overlays, label_images=not args.no_labels,
                                karyotype=not args.no_karyogram, progress=not args.quiet,
                                skip_existing=args.skip_existing, named=named, channel=args.channel,
                                pixel_size_um=args.pixel_size)
    except KeyboardInterrupt:  # predict_paths has saved what it finished: say how to go on
        print(_interrupted(args), file=sys.stderr)
        return 130
    if summary["not_metaphases"]:
        notes = summary["not_metaphases"]
        shown = ", ".join(Path(n["file"]).name for n in notes[:5]) + (", ..." if len(notes) > 5 else "")
        print(f"left out {len(notes)} file(s) that are not metaphase images ({shown}): label maps, masks or predict's "
              f"own outputs; listed in {Path(summary['out']) / 'images.json'}")
    out_now, out_all = _left_out(summary["out"], summary["instances"])
    done_before = (f"; with the {summary['already_done']} done before, {summary['total_images']} image(s) and "
                   f"{chromosomes_text(summary['total_instances'], out_all)} in all" if summary["already_done"] else "")
    print(f"this run: {summary['images']} image(s), {chromosomes_text(summary['instances'], out_now)}, "
          f"{summary['skipped']} skipped"
          f"{done_before}; results in {summary['out']}"
          + (f" ({summary['problems']})" if summary["skipped"] or summary.get("warnings") else ""))
    if args.model == "auto" and summary["settings"]:  # which shipped model each image went to
        used: dict[str, int] = {}
        for model, _inference, n in summary["settings"]:
            name = f"{model.get('name')} ({model.get('stain')})" if isinstance(model, dict) else "?"
            used[name] = used.get(name, 0) + n
        print("models, by each image's stain (--model auto; each image's in images.json): "
              + ", ".join(f"{name} {n} image(s)" for name, n in used.items()))
    warned = summary.get("warned_files") or []
    if warned:  # kept: used all the same, so the exit status does not change
        shown = ", ".join(Path(f).name for f in warned[:5]) + (", ..." if len(warned) > 5 else "")
        print(f"note: the image readers warned about {len(warned)} file(s) that were used all the same ({shown}); "
              f"each warning is in {Path(summary['out']) / 'problems.json'} as kept")
    if len(summary["settings"]) > 1:
        from chromoseg.engine.predict import describe_inference

        print("note: the images in this folder were predicted with different models or settings (each image's "
              "own are in images.json):")
        for model, inference, n in summary["settings"]:
            print(f"  {n} image(s): {describe_inference(inference, model)}")
    for f in summary["skipped_files"]:
        print(f"skipped: {f}", file=sys.stderr)
    if not summary["images"] and not summary["already_done"]:
        return EXIT_NOTHING_DONE
    return EXIT_PARTIAL if summary["skipped"] else EXIT_OK


def register(sub) -> None:
    from chromoseg.engine.settings import (AMP_MODES, CLASS_RULES, PAPER_RULE, PAPER_SCORE_THRESHOLD, SCORES,
                                           InferenceConfig)

    p = sub.add_parser("predict", help=COMMANDS["predict"][1],
                       description=PREDICT_HELP.format(shipped_thresholds=_shipped_thresholds(),
                                                       paper_threshold=PAPER_SCORE_THRESHOLD),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns (TIFF, PNG, JPEG, BMP)")
    p.add_argument("--model", default="auto", metavar="NAME|PATH",
                   help="auto (default): each image goes to the shipped model of its stain, by its polarity (mfish: "
                        "fluorescence; gband: G-band), each loaded when its first image comes; a shipped model's name "
                        "(mfish, gband) for that one only; or a file: best.pt / last.pt of `chromoseg train`, "
                        ".safetensors of `chromoseg export`")
    p.add_argument("--out", default="out/predict", help="output folder (default: out/predict)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when available)")
    p.add_argument("--batch-size", type=positive_int, default=1, help="images per forward pass (default 1)")
    p.add_argument("--threads", type=nonneg_int, default=0, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--top-k", type=positive_int, default=InferenceConfig.top_k,
                   help=f"detections whose masks are computed (default and paper: {InferenceConfig.top_k})")
    p.add_argument("--mask-threshold", type=unit_float, default=InferenceConfig.mask_threshold,
                   help=f"mask probability threshold (default {InferenceConfig.mask_threshold})")
    p.add_argument("--mask-nms-iou", type=unit_float, default=InferenceConfig.mask_nms_iou,
                   help=f"mask-level NMS IoU threshold; 0 turns it off (default {InferenceConfig.mask_nms_iou})")
    p.add_argument("--score-threshold", type=unit_float, default=None,
                   help="confidence threshold, applied last. Default: the model file's recommendation (chosen on a "
                        f"validation split; {_shipped_thresholds()}), else the paper's {PAPER_SCORE_THRESHOLD:g}")
    p.add_argument("--proposals", type=positive_int, default=None, metavar="N",
                   help="region proposals per image kept after the RPN (more finds more crowded chromosomes, "
                        "slower). Default: the model file's recommendation, else the model's own 300")
    p.add_argument("--frame", default="auto", choices=["auto", "on", "off"],
                   help="crop each image to its metaphase (plus a margin) before resizing it to the network's input, "
                        "so chromosome size does not depend on how the camera framed the cell; auto (default) = as the "
                        "model was trained (on for models trained with `chromoseg train --frame`)")
    p.add_argument("--rescore", default="auto", choices=["auto", "on", "off"],
                   help="score each detection on its own final rotated box rather than on the proposal it came from "
                        "(long chromosomes' proposals score low; ours, not the paper's); auto (default) = the model "
                        "file's recommendation (on for the shipped G-band model), else off")
    p.add_argument("--endpoint-snap", type=unit_float, default=InferenceConfig.endpoint_snap, metavar="PEAK",
                   help="move an endpoint the endpoint heatmap is unsure of (its value under PEAK, or off the mask) to "
                        "the end of the mask's skeleton on its side; 0 = the heatmap's ends as they are (default "
                        f"{InferenceConfig.endpoint_snap:g}, chosen on the M-FISH validation split)")
    p.add_argument("--amp", default=InferenceConfig.amp, choices=AMP_MODES,
                   help="mixed precision: auto (default) = bf16 autocast on a CPU with bf16 instructions (AVX512-BF16 / "
                        "AMX; about 1.5x faster, AP within half a point of fp32 on the M-FISH validation split), else fp32; "
                        "off = always fp32")
    p.add_argument("--score", default=None, choices=SCORES,
                   help="the confidence: class = the class probability (the paper); object = 1 - P(background), "
                        "so a chromosome of unsure class still counts (its class margin is flagged); with object the heads "
                        "give one candidate per region, not one per class. Default: "
                        f"the model file's recommendation (the shipped mfish model: object), else {PAPER_RULE['score']}")
    p.add_argument("--classes", default=None, choices=CLASS_RULES,
                   help="independent: each chromosome's most probable class; karyotype: the classes of a metaphase "
                        "chosen together, about two per autosome (a third copy only on strong evidence). Default: "
                        f"the model file's recommendation, else {PAPER_RULE['classes']}")
    p.add_argument("--no-crop-classifier", action="store_true",
                   help="classes from the RoI head even when the model carries a second-stage crop classifier")
    p.add_argument("--no-overlays", action="store_true", help="do not write overlay PNGs")
    p.add_argument("--no-labels", action="store_true", help="do not write label TIFFs")
    p.add_argument("--no-karyogram", action="store_true", help="no karyograms, counts or report")
    p.add_argument("--channel", default=None, metavar="NAME|INDEX",
                   help="the channel the model sees, for files with several: a channel's name as the file gives it, "
                        "in any case (an OME-TIFF's channel Name or Fluor, e.g. DAPI or dapi; an ImageJ label), R, G or B "
                        "(red, green, blue) of a colour image, grey for colour converted to grey, or a 0-based index "
                        "(0 = the first). A file without that channel is skipped, naming the channels it has. Default: "
                        "a grey image as it is, colour converted to grey, the first channel of a multi-channel file "
                        "(with a warning in problems.json naming them all)")
    p.add_argument("--pixel-size", type=positive_float, default=None, metavar="UM",
                   help="micrometres per pixel, recorded in images.json instead of the file's own (OME PhysicalSizeX, "
                        "ImageJ or TIFF resolution tags; where the file says otherwise its value is kept as "
                        "pixel_size_um_in_file), e.g. 0.065 for a 100x objective on a 6.5 um camera pixel. A model that "
                        "records the pixel size it was trained at (export --train-pixel-size) gets each image "
                        "at that scale; with other models it changes nothing (images.json: scale_rule)")
    p.add_argument("--skip-existing", action="store_true",
                   help="images already in OUT/images.json (a run that was stopped) are not predicted again; "
                        "their results stay in the files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_predict)
