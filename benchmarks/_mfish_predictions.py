"""One prediction run of a model over a split, kept on disk for the benchmarks that only score it
(``bench_endpoints.py``, ``bench_karyotype_line.py``): each image through the ``Predictor`` with
predict's defaults (the model file's recommendations), its final instances as COCO results
(``instances_to_results``: RLE masks, endpoints, classes, class scores) in ``results.json`` and the
ED heatmap at the image's size (float16) in ``heat/<image id>.npy``. The endpoints saved are the
ED heatmap's own (``endpoint_snap`` off where the settings have it), so a benchmark can measure
any refinement of them afterwards. A folder that holds a finished run of the same split and model is
read, not predicted again.
"""
from __future__ import annotations

import json
import time
from pathlib import Path


def cached_predictions(gt_path: Path, folder: Path, model: str = "mfish", threads: int = 1,
                       progress: bool = True) -> tuple[list[dict], Path, dict]:
    """``(results, heat_folder, run)``: the cached run in ``folder`` when it is of ``gt_path``'s images
    and ``model``, else a new one (written there). ``run``: what was run (model, settings, seconds)."""
    gt_path, folder = Path(gt_path), Path(folder)
    done = folder / "run.json"
    gt = json.loads(gt_path.read_text())
    ids = sorted(img["id"] for img in gt["images"])
    if done.is_file():
        run = json.loads(done.read_text())
        if run.get("model") == model and run.get("image_ids") == ids and run.get("gt") == gt_path.name:
            return json.loads((folder / "results.json").read_text()), folder / "heat", run

    import numpy as np
    import torch

    from chromoseg.data.coco import resolve_image_path
    from chromoseg.data.io import read_image
    from chromoseg.engine.predict import InferenceConfig, Predictor, instances_to_results

    torch.set_num_threads(threads)
    overrides = {"endpoint_snap": False} if "endpoint_snap" in InferenceConfig.__dataclass_fields__ else {}
    predictor = Predictor.from_checkpoint(model, InferenceConfig(**overrides))
    heats: list = []
    hook = predictor.model.register_forward_hook(lambda mod, inp, out: heats.append(
        [o.get("endpoint_heatmap") for o in out]))
    (folder / "heat").mkdir(parents=True, exist_ok=True)
    results = []
    t0 = time.perf_counter()
    for k, img in enumerate(sorted(gt["images"], key=lambda im: im["id"])):
        arr = read_image(resolve_image_path(img["file_name"], gt_path.parent))
        heats.clear()
        insts = predictor([arr])[0]
        hm = heats[-1][0] if heats and heats[-1] else None
        if hm is not None:
            np.save(folder / "heat" / f"{img['id']}.npy", hm[0].float().cpu().numpy().astype(np.float16))
        results += instances_to_results(insts, img["id"], img["file_name"])
        if progress:
            print(f"  {k + 1}/{len(ids)} {Path(img['file_name']).name}: {len(insts)} instances "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    hook.remove()
    cfg = predictor.cfg
    run = {"model": model, "gt": gt_path.name, "image_ids": ids, "seconds": round(time.perf_counter() - t0, 1),
           "threads": threads, "settings": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}}
    (folder / "results.json").write_text(json.dumps(results))
    done.write_text(json.dumps(run, indent=1, default=str))
    return results, folder / "heat", run


if __name__ == "__main__":  # python benchmarks/_mfish_predictions.py GT.json FOLDER [MODEL]
    import sys

    res, _, run = cached_predictions(Path(sys.argv[1]), Path(sys.argv[2]), *(sys.argv[3:4] or ["mfish"]))
    print(f"{len(res)} instances, {run['seconds']} s")
