"""Framing (crop to the metaphase) and the annotator's boxes (``hboxes``) through transforms and the model."""
import random

import numpy as np
import pytest
import torch

from chromoseg.data import transforms as T
from chromoseg.ops import background_level, content_box, crop_padded, frame_box
from test_data_transforms import check_consistent, make_sample


def metaphase(h=300, w=400, dark_on_light=True, seed=0):
    """Rods in a cluster inside a large empty field, the field's grey level with mild noise."""
    import cv2

    rng = np.random.default_rng(seed)
    bg, fg = (0.92, 0.35) if dark_on_light else (0.08, 0.7)
    img = np.full((h, w), bg, np.float32) + rng.normal(0, 0.01, (h, w)).astype(np.float32)
    for _ in range(12):
        x, y = rng.integers(150, 260), rng.integers(100, 190)
        a = rng.uniform(0, np.pi)
        cv2.line(img, (int(x), int(y)), (int(x + 20 * np.cos(a)), int(y + 20 * np.sin(a))), float(fg), 5)
    return np.clip(img, 0, 1)


@pytest.mark.parametrize("dark_on_light", [True, False])
def test_content_box_finds_the_cluster_either_polarity(dark_on_light):
    img = metaphase(dark_on_light=dark_on_light)
    ys, xs = np.nonzero(np.abs(img - np.median(img)) > 0.2)
    truth = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert np.allclose(content_box(img), truth, atol=4)
    assert content_box(np.full((50, 60), 0.5, np.float32)) is None


def test_frame_box_has_the_input_aspect_and_reaches_past_the_image():
    img = metaphase()
    x0, y0, x1, y1 = frame_box(img, (512, 640))
    assert abs((x1 - x0) / (y1 - y0) - 640 / 512) < 0.02
    c = content_box(img)
    assert x0 < c[0] and y0 < c[1] and x1 > c[2] and y1 > c[3]
    # a cluster at the corner: the frame reaches past the image, filled with the background
    corner = np.full((300, 400), 0.9, np.float32)
    corner[0:30, 0:80] = 0.3
    box = frame_box(corner, (100, 100))
    assert box[0] < 0 and box[1] < 0
    crop = crop_padded(corner, box, background_level(corner))
    assert crop.shape == (box[3] - box[1], box[2] - box[0]) and crop[0, 0] == pytest.approx(0.9)


def test_frame_follows_the_metaphase_not_the_field():
    img = metaphase()
    big = np.full((600, 800), background_level(img), np.float32)
    big[150:450, 200:600] = img
    a, b = frame_box(img, (512, 512)), frame_box(big, (512, 512))
    assert np.allclose(np.subtract(b, (200, 150, 200, 150)), a, atol=3)


def test_margins_follow_flips_turns_and_scale():
    m = torch.tensor([[1.0, 2.0, 3.0, 4.0]])  # left, top, right, bottom
    assert torch.equal(T._map_margins(np.diag([-1.0, 1.0, 1.0]), m), torch.tensor([[3.0, 2.0, 1.0, 4.0]]))
    assert torch.equal(T._map_margins(np.diag([1.0, -1.0, 1.0]), m), torch.tensor([[1.0, 4.0, 3.0, 2.0]]))
    assert torch.equal(T._map_margins(np.diag([2.0, 0.5, 1.0]), m), torch.tensor([[2.0, 1.0, 6.0, 2.0]]))
    turn = T.rotation_matrix(90.0, (0.0, 0.0))  # x' = y, y' = -x: the old top becomes the new left
    assert torch.allclose(T._map_margins(turn, m), torch.tensor([[2.0, 3.0, 4.0, 1.0]]), atol=1e-6)
    tilt = T.rotation_matrix(30.0, (0.0, 0.0))
    assert torch.allclose(T._map_margins(tilt, m), torch.full((1, 4), 2.5))


def with_hboxes(img, t, margin=3.0):
    t = dict(t)
    t["hboxes"] = t["boxes"] + torch.tensor([-margin, -margin, margin, margin])
    return img, t


@pytest.mark.parametrize("transform", [T.RandomHorizontalFlip(1.0), T.RandomVerticalFlip(1.0), T.RandomRotate90(1.0),
                                       T.Resize((120, 160)), T.RandomRotation(40.0, 1.0)])
def test_hboxes_keep_their_margin_around_the_masks(transform):
    random.seed(3)
    img, t = with_hboxes(*make_sample(), margin=3.0)
    img2, t2 = transform(img, t)
    check_consistent(img2, t2)
    m = T.box_margins(t2["hboxes"], t2["boxes"])
    H, W = img2.shape[-2:]
    inside = (t2["boxes"][:, 0] > 8) & (t2["boxes"][:, 1] > 8) & (t2["boxes"][:, 2] < W - 8) & (t2["boxes"][:, 3] < H - 8)
    scale = 2.0 if isinstance(transform, T.Resize) else 1.0
    assert torch.allclose(m[inside], torch.full_like(m[inside], 3.0), atol=0.51 * scale) or \
        torch.allclose(m[inside][:, ::2], torch.full_like(m[inside][:, ::2], 3.0 * scale), atol=0.01)
    assert (m >= -1e-4).all()


def test_frame_to_content_crops_everything_exactly():
    img_np = metaphase()
    img = torch.from_numpy(img_np)[None]
    mask = torch.zeros((1, 300, 400), dtype=torch.uint8)
    mask[0, 120:140, 180:190] = 1
    t = {"boxes": T.masks_to_boxes(mask), "hboxes": torch.tensor([[178.0, 118.0, 192.0, 142.0]]),
         "rboxes": torch.tensor([[185.0, 130.0, 20.0, 10.0, -90.0]]), "labels": torch.tensor([1]), "masks": mask,
         "endpoints": torch.tensor([[[185.0, 120.5], [185.0, 139.5]]]), "iscrowd": torch.zeros(1, dtype=torch.int64),
         "area": torch.tensor([200.0]), "has_masks": torch.tensor(True)}
    img2, t2 = T.FrameToContent((256, 256))(img, t)
    x0, y0, x1, y1 = frame_box(img_np, (256, 256))
    assert img2.shape[-2:] == (y1 - y0, x1 - x0)
    assert torch.equal(t2["masks"][0, 120 - y0:140 - y0, 180 - x0:190 - x0], mask[0, 120:140, 180:190])
    assert int(t2["masks"].sum()) == 200
    assert torch.allclose(t2["hboxes"], t["hboxes"] - torch.tensor([x0, y0, x0, y0], dtype=torch.float32))
    assert torch.allclose(t2["endpoints"][0, 0], torch.tensor([185.0 - x0, 120.5 - y0]))


def test_random_zoom_keeps_the_target_consistent_and_fills_with_background():
    random.seed(0)
    img, t = make_sample(120, 160)
    img = 0.9 - img * 0.5  # dark rods on light
    z = T.RandomZoom((0.5, 0.5), p=1.0)
    img2, t2 = z(img, t)
    assert img2.shape == img.shape
    check_consistent(img2, t2, rbox_iou_min=0.6)
    assert t2["area"].sum() == pytest.approx(t["area"].sum() * 0.25, rel=0.25)
    filled = ((img2 - img.median()).abs() < 1e-5).float().mean()
    assert filled >= 0.7  # three quarters of the output come from outside the image: the background grey


def test_dataset_gives_hboxes_from_source_bbox(tmp_path):
    import json

    from chromoseg.data.dataset import ChromosomeDataset
    from test_train import write_set

    p = write_set(tmp_path, n=1)
    d = json.loads(p.read_text())
    for a in d["annotations"]:
        x, y, w, h = a["bbox"]
        a["source_bbox"] = [x - 2, y - 3, w + 4, h + 6]
    p.write_text(json.dumps(d))
    img, t = ChromosomeDataset(p)[0]
    assert torch.allclose(T.box_margins(t["hboxes"], t["boxes"]), torch.tensor([2.0, 3.0, 2.0, 3.0]).expand_as(t["boxes"]))
    d["annotations"] = [{k: v for k, v in a.items() if k != "source_bbox"} for a in d["annotations"]]
    p.write_text(json.dumps(d))
    assert "hboxes" not in ChromosomeDataset(p)[0][1]


def test_model_trains_on_hboxes_and_reports_them():
    """The H branch's target is the annotator's box where there is one; detections carry the H box."""
    from chromoseg.models import SMALL, build_model
    from test_models import synth_sample

    torch.manual_seed(0)
    model = build_model("ermr", backbone="resnet18", image_size=(128, 160), ed_layers=3, **SMALL)
    img, t = synth_sample()
    t_far = dict(t, hboxes=t["boxes"] + torch.tensor([-30.0, -30.0, 30.0, 30.0]))
    model.train()
    torch.manual_seed(1)
    near = model([img], [t])["loss_box_reg_h"]
    torch.manual_seed(1)
    far = model([img], [t_far])["loss_box_reg_h"]
    assert float(far.detach()) > float(near.detach()) * 1.5
    model.eval()
    with torch.no_grad():
        out = model([img])[0]
    assert "hboxes" in out and out["hboxes"].shape == out["boxes"].shape


def test_model_framing_maps_detections_back():
    """A model that frames its images gives its detections in the whole image's pixels."""
    from chromoseg.models import SMALL, build_model

    torch.manual_seed(0)
    model = build_model("ermr", backbone="resnet18", image_size=(128, 128), frame=True, ed_layers=3, **SMALL).eval()
    assert model.config["frame"] and model.transform.frame
    img = torch.from_numpy(metaphase())[None]
    with torch.no_grad():
        out = model([img])[0]
    x0, y0, x1, y1 = frame_box(img[0].numpy(), (128, 128))
    assert out["frame"].tolist() == [x0, y0, x1, y1]
    assert out["masks"].shape[-2:] == (300, 400)
    if out["boxes"].numel():
        assert (out["boxes"][:, 0] >= max(x0, 0) - 1e-3).all() and (out["boxes"][:, 2] <= min(x1, 400) + 1e-3).all()


def test_one_metaphase_framed_three_ways_gives_the_same_chromosomes():
    """The shipped G-band example as it is, pasted into a field twice as wide and high, and shrunk to
    60 %: with framing the model sees the same metaphase at the same scale, so it finds the same
    chromosomes (boxes mapped back to the original image)."""
    import cv2
    from pathlib import Path

    import chromoseg
    from chromoseg.data.io import read_image
    from torchvision.ops import box_iou

    arr = read_image(Path(__file__).resolve().parents[1] / "examples" / "cil-gband" / "103203.jpg")
    h, w = arr.shape
    big = np.full((2 * h, 2 * w), np.median(arr), arr.dtype)
    big[h // 2:h // 2 + h, w // 2:w // 2 + w] = arr
    small = cv2.resize(arr, (round(w * 0.6), round(h * 0.6)), interpolation=cv2.INTER_AREA)
    model = chromoseg.load_model("gband", frame=True)

    def boxes(image, f, dx, dy):
        b = torch.tensor([i["bbox"] for i in model.predict(image, karyogram=False).instances], dtype=torch.float32)
        b[:, 2:] += b[:, :2]
        return (b - torch.tensor([dx, dy, dx, dy])) / f

    ref = boxes(arr, 1.0, 0, 0)
    for other in (boxes(big, 1.0, w // 2, h // 2), boxes(small, 0.6, 0, 0)):
        assert abs(len(other) - len(ref)) <= 2
        matched = (box_iou(ref, other).max(1).values >= 0.5).float().mean()
        assert matched >= 0.9, float(matched)
