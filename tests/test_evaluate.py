"""Tests of chromoseg.engine.evaluate and the `chromoseg evaluate` command (tiny synthetic sets)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from chromoseg.engine.evaluate import EvaluationError, evaluate, perfect_results, write_report

H = W = 64


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def _rect(x0, y0, x1, y1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def make_gt(box_only: bool = False) -> dict:
    """3 images, 7 instances, classes 1, 2, 23 (X), 7; one annotation as a polygon."""
    layout = {
        1: [((4, 4, 14, 40), 1), ((20, 6, 30, 30), 2), ((40, 10, 60, 18), 23)],
        2: [((5, 40, 25, 50), 1), ((30, 30, 38, 60), 7)],
        3: [((10, 10, 20, 20), 2), ((40, 40, 56, 52), 7)],
    }
    images, anns = [], []
    for iid, objs in layout.items():
        images.append({"id": iid, "file_name": f"img{iid}.png", "height": H, "width": W})
        for (x0, y0, x1, y1), cat in objs:
            ann = {"id": len(anns) + 1, "image_id": iid, "category_id": cat,
                   "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0}
            if not box_only:
                if iid == 3 and cat == 7:  # a polygon (pixel-square outline)
                    ann["segmentation"] = [[x0, y0, x1, y0, x1, y1, x0, y1]]
                else:
                    ann["segmentation"] = _rle(_rect(x0, y0, x1, y1))
            anns.append(ann)
    from chromoseg.data.classes import coco_categories

    data = {"images": images, "annotations": anns, "categories": coco_categories()}
    if box_only:
        data["chromoseg"] = {"box_only": True}
    return data


def ap(report, mode, iou_type, key="AP"):
    return report["metrics"][mode][iou_type][key]


def test_perfect_predictions_score_one():
    gt = make_gt()
    res = perfect_results(gt)
    assert len(res) == 7 and all(r["score"] == 1.0 for r in res)
    rep = evaluate(gt, res)
    for mode in ("multi", "binary"):
        for t in ("segm", "bbox"):
            for key in ("AP", "AP50", "AP75"):
                assert ap(rep, mode, t, key) == pytest.approx(1.0), (mode, t, key)
    assert rep["score_threshold"] == 0.5 and "0.5" in rep["threshold_note"]
    assert rep["counts"]["images"] == 3 and rep["counts"]["annotations"] == 7
    assert rep["counts"]["detections_used"] == 7
    pc = rep["metrics"]["multi"]["segm"]["per_class"]
    assert pc["1"]["AP"] == pytest.approx(1.0) and pc["X"]["AP"] == pytest.approx(1.0)
    assert pc["Y"]["AP"] is None and pc["Y"]["gt"] == 0  # no ground truth for Y
    conf = rep["confusion"]
    m = np.array(conf["matrix"])
    assert m.shape == (25, 25) and conf["rows"][-1] == "background" and conf["cols"][-1] == "missed"
    assert np.trace(m) == 7 and m.sum() == 7
    assert conf["class_accuracy_of_matched"] == pytest.approx(1.0)
    json.dumps(rep)  # JSON-ready


def test_wrong_class_binary_one_multi_lower_and_off_diagonal():
    gt = make_gt()
    res = perfect_results(gt)
    wrong = next(r for r in res if r["category_id"] == 23)
    wrong["category_id"] = 24  # X predicted as Y
    rep = evaluate(gt, res)
    for t in ("segm", "bbox"):
        assert ap(rep, "binary", t) == pytest.approx(1.0)
        assert ap(rep, "multi", t) < 0.99
    m = np.array(rep["confusion"]["matrix"])
    assert m[22, 23] == 1  # row X (gt), column Y (predicted)
    assert np.trace(m) == 6
    assert rep["metrics"]["multi"]["segm"]["per_class"]["X"]["AP"] == pytest.approx(0.0)


def test_missed_instance_lowers_ap50_and_counts_missed():
    gt = make_gt()
    res = perfect_results(gt)[1:]  # drop one instance (image 1, class 1)
    rep = evaluate(gt, res)
    assert ap(rep, "binary", "segm", "AP50") < 1.0
    assert ap(rep, "multi", "segm", "AP50") < 1.0
    assert ap(rep, "binary", "bbox", "AP50") < 1.0
    m = np.array(rep["confusion"]["matrix"])
    assert m[0, 24] == 1 and rep["confusion"]["missed"] == 1


def test_threshold_changes_results_with_low_score_detections():
    gt = make_gt()
    res = perfect_results(gt)
    # a confident false positive, and a true detection whose score is below 0.5
    fp = {"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": _rle(_rect(45, 40, 60, 60)),
          "bbox": [45, 40, 15, 20]}
    res[0]["score"] = 0.3
    res.append(fp)
    paper = evaluate(gt, res, score_threshold=0.5)
    coco = evaluate(gt, res, score_threshold=0)
    assert paper["counts"]["detections_below_threshold"] == 1
    assert coco["counts"]["detections_below_threshold"] == 0
    assert coco["counts"]["detections_used"] == paper["counts"]["detections_used"] + 1
    assert ap(paper, "binary", "segm") != pytest.approx(ap(coco, "binary", "segm"))
    assert "standard COCO" in coco["threshold_note"]
    assert paper["confusion"]["missed"] == 1 and coco["confusion"]["missed"] == 0
    assert paper["confusion"]["false_detections"] == 1
    # low-score duplicates: dropped at 0.5 (no unmatched detections); kept at 0 (but ranked after all
    # true positives, so COCO's interpolated AP stays 1.0)
    dup = perfect_results(gt) + [dict(r, score=0.2) for r in perfect_results(gt)]
    assert evaluate(gt, dup)["confusion"]["false_detections"] == 0
    assert evaluate(gt, dup, score_threshold=0)["confusion"]["false_detections"] == 7
    assert ap(evaluate(gt, dup, score_threshold=0), "binary", "segm") == pytest.approx(1.0)


def test_box_only_set_gets_bbox_only(tmp_path):
    gt = make_gt(box_only=True)
    res = perfect_results(gt)
    assert all("segmentation" not in r for r in res)
    rep = evaluate(gt, res)
    assert rep["box_only"] is True
    assert rep["iou_types"] == ["bbox"] and "segm" in rep["skipped_iou_types"]
    assert "box-only" in rep["skipped_iou_types"]["segm"]
    assert ap(rep, "multi", "bbox") == pytest.approx(1.0) and "segm" not in rep["metrics"]["multi"]
    assert rep["confusion"]["iou"] == "box" and rep["confusion"]["correct_class"] == 7
    paths = write_report(rep, tmp_path)
    assert "box-only" in paths["markdown"].read_text()


def test_per_image_has_masks_false_evaluates_segm_on_masked_images_only():
    gt = make_gt()
    gt["images"][2]["has_masks"] = False
    res = perfect_results(gt)
    rep = evaluate(gt, res)
    assert rep["counts"]["images_with_masks"] == 2
    assert rep["metrics"]["multi"]["segm"]["images"] == 2 and rep["metrics"]["multi"]["bbox"]["images"] == 3
    assert ap(rep, "multi", "segm") == pytest.approx(1.0)
    assert any("images that have masks" in w for w in rep["warnings"])


def test_results_by_file_name_and_bad_entries_are_skipped_and_counted():
    gt = make_gt()
    res = perfect_results(gt)
    by_name = []
    for r in res:
        r = dict(r)
        iid = r.pop("image_id")
        if iid == 1:
            r["file_name"] = "some/folder/img1.png"  # matched by base name
            r["image_id"] = 2  # predict numbers images its own way: the file name wins
        else:
            r["image_id"] = f"img{iid}.png"  # a file name in place of the id
        by_name.append(r)
    bad = [
        {"image_id": 99, "category_id": 1, "score": 0.9, "bbox": [0, 0, 5, 5]},
        {"file_name": "nope.png", "category_id": 1, "score": 0.9, "bbox": [0, 0, 5, 5]},
        {"image_id": 1, "category_id": 25, "score": 0.9, "bbox": [0, 0, 5, 5]},
        {"image_id": 1, "category_id": 0, "score": 0.9, "bbox": [0, 0, 5, 5]},
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]},
    ]
    rep = evaluate(gt, by_name + bad)
    assert ap(rep, "multi", "segm") == pytest.approx(1.0)
    assert rep["counts"]["detections_matched_by_file_name"] == 7
    sk = rep["counts"]["skipped"]["results"]
    assert sk["unknown_image"] == 2 and sk["category_outside_1-24"] == 2 and sk["missing_or_bad_score"] == 1
    assert any("unknown image" in w and "99" in w for w in rep["warnings"])


def test_gt_with_bad_categories_reported():
    gt = make_gt()
    gt["annotations"].append({"id": 100, "image_id": 1, "category_id": 30, "bbox": [1, 1, 2, 2],
                              "segmentation": _rle(_rect(1, 1, 3, 3))})
    rep = evaluate(gt, perfect_results(gt))
    assert rep["counts"]["skipped"]["ground_truth"]["category_outside_1-24"] == 1
    assert rep["counts"]["annotations"] == 7


def test_bad_inputs_give_clear_errors(tmp_path):
    gt = make_gt()
    with pytest.raises(EvaluationError, match="not found.*missing.json"):
        evaluate(tmp_path / "missing.json", [])
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(EvaluationError, match="broken.json is not valid JSON"):
        evaluate(broken, [])
    with pytest.raises(EvaluationError, match="results file .*broken.json"):
        evaluate(gt, broken)
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    with pytest.raises(EvaluationError, match="ground truth first"):
        evaluate(perfect_results(gt), gt_path)  # swapped arguments
    with pytest.raises(EvaluationError, match="list of detections"):
        evaluate(gt_path, {"foo": 1})
    with pytest.raises(EvaluationError, match="no 'annotations' list"):
        evaluate({"images": []}, [])
    with pytest.raises(EvaluationError, match="unknown mode"):
        evaluate(gt, [], modes=("multiclass",))


def test_no_detections_gives_zero_ap():
    rep = evaluate(make_gt(), [])
    assert ap(rep, "multi", "segm") == 0.0 and ap(rep, "binary", "bbox") == 0.0
    assert rep["confusion"]["missed"] == 7


def test_inputs_not_modified():
    gt = make_gt()
    res = perfect_results(gt)
    gt0, res0 = copy.deepcopy(gt), copy.deepcopy(res)
    evaluate(gt, res)
    assert gt == gt0 and res == res0


def test_cli_writes_outputs_and_help(tmp_path, capsys):
    import argparse

    from chromoseg.cli import CliError
    from chromoseg.cli import evaluate as evaluate_cli

    parser = argparse.ArgumentParser(prog="chromoseg")
    evaluate_cli.register(parser.add_subparsers(dest="command"))
    gt = make_gt()
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(perfect_results(gt)))
    out = tmp_path / "eval"
    args = parser.parse_args(["evaluate", str(gt_path), str(res_path), "--score-threshold", "0",
                              "--mode", "binary", "--out", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "score threshold 0" in printed and "100.00" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["score_threshold"] == 0 and report["modes"] == ["binary"]
    assert "score threshold: 0**" in (out / "summary.md").read_text()
    csv = (out / "confusion_matrix.csv").read_text().splitlines()
    assert len(csv) == 26 and csv[0].endswith("missed") and csv[-1].startswith("background")
    args = parser.parse_args(["evaluate", str(tmp_path / "nope.json"), str(res_path)])
    with pytest.raises(CliError, match="nope.json"):
        args.func(args)
    with pytest.raises(SystemExit):
        parser.parse_args(["evaluate", "--help"])
    helptext = capsys.readouterr().out
    assert "confidence score threshold of 0.5" in helptext and "binary" in helptext


@pytest.fixture(scope="module")
def real_mfish_set(tmp_path_factory):
    """Two test-split slides of ``../shared/data/adir-mfish`` imported here (so CI, which has the
    shared data but never builds ``datasets/``, runs the test)."""
    from conftest import require_data

    from chromoseg.data.importers.mfish import import_mfish

    src = require_data("adir-mfish")
    root = tmp_path_factory.mktemp("mfish")
    for slide in ("V17__XY", "A03__13"):
        (root / slide).symlink_to(src / slide)
    out = root / "set"
    import_mfish(root, out, progress=False)
    return out / "all.json"


@pytest.mark.realdata
def test_real_mfish_perfect_predictions(real_mfish_set):
    rep = evaluate(real_mfish_set, perfect_results(real_mfish_set), modes=("multi", "binary"))
    assert rep["iou_types"] == ["segm", "bbox"]
    for mode in ("multi", "binary"):
        for t in rep["iou_types"]:
            assert ap(rep, mode, t) == pytest.approx(1.0), (mode, t)
    assert rep["counts"]["images"] >= 2 and rep["counts"]["annotations"] >= 80
    # and it can fail: a quarter of the classes wrong costs multi-class AP, not binary
    res = perfect_results(real_mfish_set)
    for r in res[::4]:
        r["category_id"] = r["category_id"] % 24 + 1
    bad = evaluate(real_mfish_set, res, modes=("multi", "binary"), iou_types=("segm",))
    assert ap(bad, "binary", "segm") == pytest.approx(1.0) and ap(bad, "multi", "segm") < 0.85


def _noisy_results(gt: dict, seed: int = 0) -> list[dict]:
    """Shifted, partly wrong-class, partly low-score detections plus a few false positives."""
    rng = np.random.default_rng(seed)
    out = []
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        dx, dy = (int(v) for v in rng.integers(-3, 4, size=2))
        x0, y0 = max(0, x + dx), max(0, y + dy)
        m = _rect(x0, y0, min(W, x0 + w), min(H, y0 + h))
        cat = ann["category_id"] if rng.random() > 0.3 else int(rng.integers(1, 25))
        out.append({"image_id": ann["image_id"], "category_id": cat, "score": float(rng.uniform(0.05, 1)),
                    "segmentation": _rle(m), "bbox": [float(x0), float(y0), float(m.any(0).sum()), float(m.any(1).sum())]})
    for iid in (1, 2, 3):
        m = _rect(50, 50, 60, 62)
        out.append({"image_id": iid, "category_id": 7, "score": float(rng.uniform(0, 1)),
                    "segmentation": _rle(m), "bbox": [50.0, 50.0, 10.0, 12.0]})
    return out


@pytest.mark.parametrize("threshold", [0.0, 0.5])
def test_matches_plain_pycocotools(threshold):
    """Independent check: the same numbers as pycocotools' own loadRes + COCOeval pipeline."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = make_gt()
    res = _noisy_results(gt)
    rep = evaluate(gt, res, score_threshold=threshold)
    for binary in (False, True):
        g = copy.deepcopy(gt)
        r = [dict(d) for d in copy.deepcopy(res) if d["score"] >= threshold]
        if binary:
            g["categories"] = [{"id": 1, "name": "chromosome"}]
            for a in g["annotations"] + r:
                a["category_id"] = 1
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO()
            coco_gt.dataset = g
            coco_gt.createIndex()
            for t in ("segm", "bbox"):
                rr = copy.deepcopy(r)
                if t == "bbox":  # loadRes would take the mask area otherwise
                    for d in rr:
                        d.pop("segmentation")
                ev = COCOeval(coco_gt, coco_gt.loadRes(rr), t)
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
                mine = rep["metrics"]["binary" if binary else "multi"][t]
                for k, name in enumerate(("AP", "AP50", "AP75")):
                    assert mine[name] == pytest.approx(ev.stats[k]), (binary, t, name)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools decode on numpy 2
def test_results_with_polygons_and_uncompressed_rle():
    from pycocotools import mask as mask_utils

    gt = make_gt()
    res = perfect_results(gt)
    # polygon in place of RLE, and uncompressed RLE
    res[0]["segmentation"] = [[4, 4, 14, 4, 14, 40, 4, 40]]
    m = mask_utils.decode(res[1]["segmentation"])
    flat = m.flatten(order="F")
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [2]])))  # run starts (sentinel ends)
    counts = np.diff(np.concatenate([[0], change])).tolist()
    res[1]["segmentation"] = {"size": [H, W], "counts": counts}
    del res[2]["bbox"]  # taken from the mask
    rep = evaluate(gt, res)
    assert ap(rep, "multi", "segm") == pytest.approx(1.0)
    assert ap(rep, "multi", "bbox") == pytest.approx(1.0)


def test_masks_of_the_wrong_size_are_skipped_with_a_warning():
    gt = make_gt()
    res = perfect_results(gt)
    for r in res:
        r["segmentation"] = _rle(np.zeros((32, 32), bool))
    rep = evaluate(gt, res)
    assert rep["counts"]["skipped"]["results"]["mask_size_differs_from_image"] == 7
    assert any("most detections were skipped" in w for w in rep["warnings"])


def test_chromoseg_main_evaluate(tmp_path, capsys):
    from chromoseg import cli

    assert "chromoseg.cli.evaluate" in cli.COMMAND_MODULES
    gt = make_gt()
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(perfect_results(gt)))
    assert cli.main(["evaluate", str(gt_path), str(res_path)]) == 0
    assert "score threshold 0.5" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("[1, 2")
    assert cli.main(["evaluate", str(gt_path), str(tmp_path / "bad.json")]) == 2
    assert "bad.json is not valid JSON" in capsys.readouterr().err


def test_endpoint_metric():
    gt = make_gt()
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        a["endpoints"] = [[x + w / 2, y], [x + w / 2, y + h]]
    res = perfect_results(gt)
    for k, r in enumerate(res):
        r["endpoints"] = [list(p) for p in r["endpoints"]][::-1]  # crossed order still pairs right
        if k == 0:
            r["endpoints"][0][1] += 3.0  # 3 px off: within 4 px
        if k == 1:
            r["endpoints"][0][1] += 6.0  # 6 px off: a miss
    res = res[:-1]  # one instance not detected: its two endpoints count as misses of all
    e = evaluate(gt, res)["confusion"]["endpoints"]
    assert e["ground_truth_endpoints"] == 14 and e["of_matched_instances"] == 12
    assert e["within_radius"] == 11 and e["share_of_matched"] == pytest.approx(11 / 12)
    assert e["share_of_all"] == pytest.approx(11 / 14)
    assert e["mean_distance_px"] == pytest.approx(9 / 12)
    no_ends = evaluate(make_gt(), perfect_results(make_gt()))["confusion"]["endpoints"]
    assert no_ends["of_matched_instances"] == 0 and no_ends["share_of_matched"] is None


def test_error_breakdown_stages(tmp_path):
    """engine.diagnose: a perfect detection is right_class, a wrong class wrong_class, a missed
    chromosome with no proposal rpn."""
    import torch

    from chromoseg.engine.diagnose import STAGES, diagnose_image, greedy_match

    ious = np.array([[0.9, 0.1], [0.6, 0.55]])
    assert greedy_match(ious, [0.9, 0.8]) == {0: 0, 1: 1}
    assert greedy_match(ious, [0.5, 0.8]) == {0: 1}  # the higher score takes the first ground truth

    class FakeModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rpn = torch.nn.Identity()  # diagnose reads the proposals through a hook on model.rpn
            self.transform = type("T", (), {"image_size": None})()

        def forward(self, images):
            self.rpn(([torch.tensor([[20.0, 10.0, 30.0, 6.0, 0.0]])], {}))
            m = torch.zeros(1, 1, 40, 60)
            m[0, 0, 7:13, 5:35] = 0.9
            return [{"masks": m, "scores": torch.tensor([0.9]), "labels": torch.tensor([3]),
                     "boxes": torch.tensor([[5.0, 7, 35, 13]]), "rboxes": torch.tensor([[20.0, 10, 30, 6, 0]]),
                     "class_scores": torch.nn.functional.one_hot(torch.tensor([2]), 24).float() * 0.9}]

    from chromoseg.engine.predict import InferenceConfig, Predictor

    pred = Predictor(FakeModel(), InferenceConfig(score="object"))
    gt_mask = np.zeros((40, 60), bool)
    gt_mask[7:13, 5:35] = True
    far = np.zeros((40, 60), bool)
    far[30:36, 30:55] = True
    gt = [{"mask": gt_mask, "rbox": [20.0, 10, 30, 6, 0], "bbox": [5, 7, 30, 6], "category_id": 3},
          {"mask": far, "rbox": [42.5, 33, 25, 6, 0], "bbox": [30, 30, 25, 6], "category_id": 5}]
    stages, extra = diagnose_image(pred, np.zeros((40, 60), np.uint8), gt)
    assert stages == ["right_class", "rpn"] and set(stages) <= set(STAGES)
    gt[0]["category_id"] = 4
    assert diagnose_image(pred, np.zeros((40, 60), np.uint8), gt)[0][0] == "wrong_class"


def _cli(argv):
    import argparse

    from chromoseg.cli import evaluate as evaluate_cli

    parser = argparse.ArgumentParser(prog="chromoseg")
    evaluate_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["evaluate", *map(str, argv)])
    return args.func(args)


def test_only_the_predicted_images_are_scored_unless_asked(tmp_path, capsys):
    """Images of the set that were never predicted are not scored as misses by default (the output says
    how many images were scored and names the others); --all-images / images="all" counts them, with a
    warning naming them. A results entry of an image not in the set is named by its file."""
    gt = make_gt()
    res = [dict(r, file_name=f"img{r['image_id']}.png") for r in perfect_results(gt) if r["image_id"] != 3]
    res.append(dict(res[0], file_name="elsewhere/other.png"))
    rep = evaluate(gt, res, images="predicted")
    assert ap(rep, "binary", "segm") == pytest.approx(1.0) and rep["counts"]["images"] == 2
    assert rep["counts"]["unpredicted_images"] == ["img3.png"] and "2 of 3" in rep["images_note"]
    assert any("file elsewhere/other.png" in w for w in rep["warnings"])
    every = evaluate(gt, res)  # the library's default: every image, as COCO does
    assert ap(every, "binary", "segm") < 1.0 and every["confusion"]["missed"] == 2
    assert any("img3.png" in w and "not predicted" in w for w in every["warnings"])
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "results.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(res))
    assert _cli([gt_path, res_path, "--mode", "binary", "--iou-type", "segm"]) == 0
    said = capsys.readouterr().out
    assert "100.00" in said and "scored the 2 of 3" in said and "img3.png" in said and "--all-images" in said
    assert _cli([gt_path, res_path, "--mode", "binary", "--iou-type", "segm", "--all-images"]) == 0
    assert "100.00" not in capsys.readouterr().out
    # predict's images.json beside the results lists what was predicted, with or without detections
    (tmp_path / "images.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "/data/img1.png"},
                                                                 {"id": 2, "file_name": "/data/img3.png"}]}))
    rep = evaluate(gt_path, res_path, images="predicted")
    assert rep["counts"]["images"] == 2 and rep["counts"]["unpredicted_images"] == ["img2.png"]
    assert rep["confusion"]["missed"] == 2  # img3 was predicted and nothing found: its chromosomes are missed
    with pytest.raises(EvaluationError, match="none of the 3 images"):
        evaluate(gt, [dict(res[0], file_name="x.png")], images="predicted")


def test_the_threshold_defaults_to_the_one_the_results_were_made_at(tmp_path, capsys):
    """`chromoseg predict` keeps detections down to the model's recommended threshold (0.2 for the
    shipped models) and records it in images.json: evaluate scores all of them by default, and says so;
    without images.json it is the paper's 0.5."""
    gt = make_gt()
    res = [dict(r, score=0.3, file_name=f"img{r['image_id']}.png") for r in perfect_results(gt)]
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "results.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(res))
    assert evaluate(gt_path, res_path, score_threshold=None)["score_threshold"] == 0.5
    images = [{"id": i, "file_name": f"img{i}.png", "inference": {"score_threshold": 0.2}} for i in (1, 2, 3)]
    (tmp_path / "images.json").write_text(json.dumps({"images": images}))
    rep = evaluate(gt_path, res_path, score_threshold=None)
    assert rep["score_threshold"] == 0.2 and rep["counts"]["detections_below_threshold"] == 0
    assert "made at" in rep["threshold_note"] and ap(rep, "multi", "segm") == pytest.approx(1.0)
    assert _cli([gt_path, res_path, "--out", tmp_path / "e"]) == 0
    assert "score threshold 0.2: detections with score < 0.2 removed" in capsys.readouterr().out
    assert _cli([gt_path, res_path, "--score-threshold", "0.5"]) == 0  # the paper's protocol on request
    assert "score threshold 0.5" in capsys.readouterr().out
