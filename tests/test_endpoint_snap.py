"""Snapping the ED heatmap's unsure endpoints to the mask's skeleton ends (chromoseg.ops.snap_endpoints)."""
import numpy as np
import torch

from chromoseg.ops import MaskWindow, endpoint_heatmap, mask_endpoints, snap_endpoints, window_endpoints, window_of


def _bar(H=60, W=80):
    """A horizontal bar, rows 28-32, columns 10-59: skeleton ends near (12.5, 30.5) and (57.5, 30.5)."""
    m = np.zeros((H, W), bool)
    m[28:33, 10:60] = True
    return m


def test_window_endpoints_are_the_full_masks_skeleton_ends():
    m = _bar()
    full = mask_endpoints(m).numpy()
    assert np.allclose(window_endpoints(m), full)
    assert np.allclose(window_endpoints(window_of(m)), full)
    # a mask touching the image's edge: its window has no margin there
    e = np.zeros((60, 80), bool)
    e[0:5, 0:50] = True
    assert np.allclose(window_endpoints(window_of(e)), mask_endpoints(e).numpy())
    assert np.allclose(window_endpoints(np.zeros((10, 10), bool)), 0)


def test_a_sure_end_on_the_mask_stays():
    m = _bar()
    ends = [[14.0, 30.0], [56.0, 31.0]]
    heat = endpoint_heatmap(torch.tensor([ends]), (60, 80))  # value 1 at both ends
    out, moved = snap_endpoints(ends, m, heat, min_peak=0.5)
    assert moved == [False, False]
    assert np.allclose(out, ends)


def test_an_end_off_the_mask_goes_to_the_skeleton_end_on_its_side():
    m = _bar()
    sk = mask_endpoints(m).numpy()
    left = sk[np.argmin(sk[:, 0])]
    ends = [[3.0, 30.0], [56.0, 31.0]]  # the first 7 px left of the bar
    out, moved = snap_endpoints(ends, m)  # no heatmap: only the off-mask test
    assert moved == [True, False]
    assert np.allclose(out[0], left) and np.allclose(out[1], [56.0, 31.0])
    out, moved = snap_endpoints(ends, m, off_mask=False)  # nothing is unsure
    assert moved == [False, False] and np.allclose(out, ends)


def test_a_low_peak_end_goes_to_the_skeleton_end_and_order_is_kept():
    m = _bar()
    sk = mask_endpoints(m).numpy()
    right = sk[np.argmax(sk[:, 0])]
    ends = [[14.0, 30.0], [45.0, 30.0]]  # the second stops 12 px short of the bar's right end
    heat = torch.zeros(1, 60, 80)
    heat[0, 30, 14] = 0.9
    heat[0, 30, 45] = 0.2
    out, moved = snap_endpoints(ends, window_of(m), heat, min_peak=0.5)
    assert sum(moved) == 1
    k = moved.index(True)  # the ends come back ordered (smaller y first): the snapped one may lead
    assert np.allclose(out[k], right) and np.allclose(out[1 - k], [14.0, 30.0])
    assert (out[0, 1], out[0, 0]) <= (out[1, 1], out[1, 0])
    out, moved = snap_endpoints(ends, m, heat, min_peak=0.1)  # 0.2 is sure enough at 0.1
    assert moved == [False, False]
    # a vertical bar: the snapped end is ordered first when it has the smaller y
    v = np.zeros((80, 60), bool)
    v[10:60, 28:33] = True
    skv = mask_endpoints(v).numpy()
    top = skv[np.argmin(skv[:, 1])]
    out, moved = snap_endpoints([[30.0, 55.0], [30.0, 25.0]], v, np.full((80, 60), 0.9) * (np.arange(80)[:, None] > 40),
                                min_peak=0.5)
    assert moved == [True, False]
    assert np.allclose(out[0], top) and np.allclose(out[1], [30.0, 55.0])


def test_both_ends_unsure_take_both_skeleton_ends_and_an_empty_mask_changes_nothing():
    m = _bar()
    sk = mask_endpoints(m).numpy()
    out, moved = snap_endpoints([[60.0, 40.0], [2.0, 20.0]], m, np.zeros((60, 80)), min_peak=0.5)
    assert moved == [True, True]
    assert np.allclose(np.sort(out, 0), np.sort(sk, 0))
    out, moved = snap_endpoints([[1.0, 2.0], [3.0, 4.0]], MaskWindow(np.zeros((0, 0), bool), 0, 0, (60, 80)))
    assert moved == [False, False] and np.allclose(out, [[1, 2], [3, 4]])


def test_select_instances_snaps_the_unsure_end_by_the_setting():
    """predict's instance selection: with the default setting an ED end on a low heatmap value goes to
    the mask's skeleton end; ``endpoint_snap=0`` keeps the heatmap's ends; a sure end stays."""
    import pytest

    from chromoseg.engine.pipeline import select_instances
    from chromoseg.engine.settings import InferenceConfig, resolve_settings

    m = _bar()
    sk = mask_endpoints(m).numpy()
    right = sk[np.argmax(sk[:, 0])]
    ends = torch.tensor([[[14.0, 30.0], [45.0, 30.0]]])
    heat = torch.zeros(1, 60, 80)
    heat[0, 30, 14] = 0.9  # sure of the left end; the right one (value 0) stops 12 px short
    det = {"boxes": torch.tensor([[10.0, 28.0, 60.0, 33.0]]), "labels": torch.tensor([3]),
           "scores": torch.tensor([0.9]), "masks": torch.from_numpy(m)[None, None].float(),
           "endpoints": ends, "endpoint_heatmap": heat}
    assert InferenceConfig().endpoint_snap > 0  # on by default (chosen on the M-FISH validation split)
    snapped = np.asarray(select_instances(det, resolve_settings())[0]["endpoints"])
    assert any(np.allclose(p, right) for p in snapped) and any(np.allclose(p, [14.0, 30.0]) for p in snapped)
    kept = np.asarray(select_instances(det, resolve_settings(None, dict(endpoint_snap=0.0)))[0]["endpoints"])
    assert np.allclose(kept, ends[0].numpy())
    # no heatmap (a model without ED): the ends as the model gave them
    no_heat = {k: v for k, v in det.items() if k != "endpoint_heatmap"}
    assert np.allclose(select_instances(no_heat, resolve_settings())[0]["endpoints"], ends[0].numpy())
    with pytest.raises(ValueError, match="endpoint_snap"):
        resolve_settings(None, {"endpoint_snap": 1.5})


def test_predict_cli_takes_endpoint_snap(tmp_path, capsys):
    """chromoseg predict --endpoint-snap PEAK: 0 gives the heatmap's ends as they are, the default moves
    some of them (same masks); a value outside [0, 1] is refused with exit 2."""
    import json
    from pathlib import Path

    from chromoseg.cli import main

    image = Path(__file__).resolve().parents[1] / "examples" / "adir-mfish" / "V17__XY" / "V1701XYD.tif"
    runs = {}
    for name, extra in (("default", []), ("off", ["--endpoint-snap", "0"])):
        out = tmp_path / name
        assert main(["predict", str(image), "--model", "mfish", "--out", str(out), "--quiet", "--no-karyogram",
                     "--no-overlay"] + extra) == 0
        runs[name] = json.loads((out / "results.json").read_text())
    assert [r["segmentation"] for r in runs["default"]] == [r["segmentation"] for r in runs["off"]]
    moved = sum(a["endpoints"] != b["endpoints"] for a, b in zip(runs["default"], runs["off"]))
    assert 0 < moved < len(runs["off"])
    capsys.readouterr()
    try:
        code = main(["predict", str(image), "--endpoint-snap", "2", "--out", str(tmp_path / "bad"), "--quiet"])
    except SystemExit as e:  # argparse refuses it
        code = e.code
    assert code == 2 and "--endpoint-snap" in capsys.readouterr().err
