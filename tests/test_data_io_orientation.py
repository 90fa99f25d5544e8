"""Images stored turned, with an orientation tag saying how to show them upright (issue 30, point 7):
read upright by every reader, and recorded."""
import numpy as np
import pytest
from PIL import Image, ImageOps

from chromoseg.data.io import image_record, read_image, read_image_with_info


def upright_image(h: int = 80, w: int = 64) -> np.ndarray:
    """A smooth grey picture with no symmetry (a turn or mirror changes it), smooth so that JPEG keeps it."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 40 + 120 * (y / h) + 60 * (x / w) ** 2 + 30 * np.exp(-((x - 0.7 * w) ** 2 + (y - 0.25 * h) ** 2) / 60.0)
    return np.clip(img, 0, 255).astype(np.uint8)


def stored_for(upright: np.ndarray, orientation: int) -> np.ndarray:
    """What a camera stores for an upright picture with this orientation tag (the inverse turn)."""
    inverse = {1: lambda a: a, 2: np.fliplr, 3: lambda a: np.rot90(a, 2), 4: np.flipud, 5: lambda a: a.T,
               6: lambda a: np.rot90(a, 1), 7: lambda a: np.rot90(a, 2).T, 8: lambda a: np.rot90(a, -1)}
    return np.ascontiguousarray(inverse[orientation](upright))


def exif_with(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def test_jpeg_with_orientation_6_reads_like_its_upright_twin(tmp_path):
    upright = upright_image()
    Image.fromarray(upright).save(tmp_path / "upright.jpg", quality=95)
    stored = stored_for(upright, 6)
    assert stored.shape == (64, 80)  # stored lying: 80 wide, 64 high
    Image.fromarray(stored).save(tmp_path / "turned.jpg", quality=95, exif=exif_with(6))

    twin, twin_info = read_image_with_info(tmp_path / "upright.jpg")
    arr, info = read_image_with_info(tmp_path / "turned.jpg")
    assert arr.shape == twin.shape == (80, 64)
    # the same picture (JPEG compresses the two turns a little differently)
    assert np.abs(arr.astype(int) - twin.astype(int)).max() <= 6
    assert np.abs(arr.astype(int) - upright.astype(int)).mean() < 1.5
    # exactly what Pillow's exif_transpose shows for the same file
    with Image.open(tmp_path / "turned.jpg") as im:
        assert np.array_equal(arr, np.array(ImageOps.exif_transpose(im).convert("L")))
    assert np.array_equal(read_image(tmp_path / "turned.jpg"), arr)  # the plain reader too
    # recorded: in the info and in what images.json keeps
    assert info["orientation"] == 6 and "90\u00b0 clockwise" in info["orientation_applied"]
    assert twin_info["orientation"] is None and twin_info["orientation_applied"] is None
    assert "orientation" in image_record(info) and "orientation" not in image_record(twin_info)
    assert not info["warnings"]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_png_exact(tmp_path, orientation):
    upright = upright_image(40, 24)
    path = tmp_path / f"o{orientation}.png"
    Image.fromarray(stored_for(upright, orientation)).save(path, exif=exif_with(orientation))
    arr, info = read_image_with_info(path)
    assert np.array_equal(arr, upright)
    with Image.open(path) as im:
        assert np.array_equal(arr, np.array(ImageOps.exif_transpose(im)))
    assert (info["orientation_applied"] is None) == (orientation == 1)


def test_tiff_orientation_tag_and_16_bit(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    upright = upright_image(40, 24).astype(np.uint16) * 200
    path = tmp_path / "turned.tif"
    tifffile.imwrite(path, stored_for(upright, 8), extratags=[(274, "H", 1, 8, True)])
    arr, info = read_image_with_info(path)
    assert info["reader"] == "tifffile" and info["orientation"] == 8
    assert arr.dtype == np.uint16 and np.array_equal(arr, upright)


def test_odd_orientation_values_leave_the_image_as_stored():
    from chromoseg.data.io import apply_orientation

    a = upright_image(16, 12)
    for value in (None, 0, 1, 9, "x"):
        out, what = apply_orientation(a, value)
        assert out is a and what is None
