"""ChromosomeDataset: what a training loop receives."""
import numpy as np
import pytest
import torch
from PIL import Image

from chromoseg.data.coco import CocoWriter
from chromoseg.data.dataset import ChromosomeDataset, collate_fn
from chromoseg.data.io import ImageReadError
from chromoseg.data.transforms import default_transforms


def write_set(tmp_path, box_only=False, size=(48, 64)):
    h, w = size
    img = np.zeros((h, w), np.uint8)
    masks = []
    for k, (y, x0, x1) in enumerate([(10, 5, 30), (30, 20, 60)]):
        m = np.zeros((h, w), bool)
        m[y:y + 5, x0:x1] = True
        masks.append(m)
        img[m] = 200
    Image.fromarray(img).save(tmp_path / "cell.png")
    wr = CocoWriter(box_only=box_only)
    iid = wr.add_image("cell.png", h, w)
    for k, m in enumerate(masks):
        if box_only:
            ys, xs = np.nonzero(m)
            wr.add_annotation(iid, k + 1, bbox=[xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()])
        else:
            wr.add_annotation(iid, k + 1, mask=m)
    return wr.write(tmp_path / "set.json")


def test_sample_contents(tmp_path):
    ds = ChromosomeDataset(write_set(tmp_path))
    image, t = ds[0]
    assert image.shape == (1, 48, 64) and image.dtype == torch.float32 and float(image.max()) == pytest.approx(200 / 255)
    assert t["labels"].tolist() == [1, 2]
    assert t["masks"].shape == (2, 48, 64) and t["masks"].dtype == torch.uint8
    assert torch.allclose(t["boxes"][0], torch.tensor([5.0, 10, 30, 15]))
    assert t["rboxes"].shape == (2, 5) and (t["rboxes"][:, 2] >= t["rboxes"][:, 3]).all()
    assert t["endpoints"].shape == (2, 2, 2)
    assert t["endpoint_heatmap"].shape == (1, 48, 64) and float(t["endpoint_heatmap"].max()) > 0.9
    assert bool(t["has_masks"]) and bool(t["has_endpoints"])


def test_paper_size_transform(tmp_path):
    ds = ChromosomeDataset(write_set(tmp_path), transforms=default_transforms(train=True, size=(512, 640)))
    images, targets = collate_fn([ds[0], ds[0]])
    assert images[0].shape == (1, 512, 640) and targets[0]["masks"].shape[1:] == (512, 640)
    assert targets[0]["endpoint_heatmap"].shape == (1, 512, 640)


def test_box_only_set(tmp_path):
    ds = ChromosomeDataset(write_set(tmp_path, box_only=True))
    _, t = ds[0]
    assert not bool(t["has_masks"]) and not bool(t["has_endpoints"])
    assert t["masks"].sum() == 0 and t["boxes"].shape == (2, 4)
    assert torch.allclose(t["rboxes"][0, :4], torch.tensor([17.5, 12.5, 25.0, 5.0]))
    assert float(t["endpoint_heatmap"].max()) == 0.0


def test_size_mismatch_and_missing_image(tmp_path):
    path = write_set(tmp_path)
    Image.fromarray(np.zeros((40, 64), np.uint8)).save(tmp_path / "cell.png")
    with pytest.raises(ImageReadError, match="cell.png.*annotations say 64x48"):
        ChromosomeDataset(path)[0]
    (tmp_path / "cell.png").unlink()
    with pytest.raises(ImageReadError, match="no such file"):
        ChromosomeDataset(path)[0]


def test_crowd_regions_left_out_by_default(tmp_path):
    import json

    path = write_set(tmp_path)
    data = json.loads(path.read_text())
    data["annotations"][1]["iscrowd"] = 1
    path.write_text(json.dumps(data))
    assert ChromosomeDataset(path)[0][1]["labels"].tolist() == [1]
    assert ChromosomeDataset(path, keep_crowd=True)[0][1]["labels"].tolist() == [1, 2]


def test_cache_keeps_masks_one_bit_per_pixel_and_gives_the_same_samples(tmp_path):
    from chromoseg.data.dataset import _PackedMasks
    from chromoseg.data.transforms import Resize

    path = write_set(tmp_path, size=(50, 70))  # 2 x 50 x 70 mask bits: not a multiple of 8 per mask
    plain = ChromosomeDataset(path, transforms=Resize((40, 56)))
    cached = ChromosomeDataset(path, transforms=Resize((40, 56)), cache=True)
    want_img, want = plain[0]
    for _ in range(2):  # the first read fills the cache, the second comes from it
        img, t = cached[0]
        assert torch.equal(img, want_img) and set(t) == set(want)
        for k in want:
            assert torch.equal(t[k], want[k]), k
    packed = cached._cache[0][1]["masks"]
    assert isinstance(packed, _PackedMasks) and packed.bits.nbytes == -(-2 * 40 * 56 // 8)
    t["masks"][0, 0, 0] = 7  # a caller's change does not reach the cache
    assert cached[0][1]["masks"][0, 0, 0] == want["masks"][0, 0, 0]
