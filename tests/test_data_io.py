"""Image reading: formats, bit depths, and clear errors naming the file."""
import numpy as np
import pytest
from PIL import Image

from chromoseg.data.io import ImageReadError, list_images, read_image, read_label_map, to_float01


def test_reads_grey_rgb_palette_and_16bit(tmp_path):
    grey = (np.arange(32 * 40) % 256).astype(np.uint8).reshape(32, 40)
    Image.fromarray(grey).save(tmp_path / "g.png")
    Image.fromarray(grey).save(tmp_path / "g.bmp")
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "rgb.jpg", quality=100)
    Image.fromarray(grey).convert("P").save(tmp_path / "pal.tif", compression="tiff_lzw")
    deep = (np.arange(32 * 40, dtype=np.uint16) * 50).reshape(32, 40)
    Image.fromarray(deep).save(tmp_path / "d16.tif")
    assert np.array_equal(read_image(tmp_path / "g.png"), grey)
    assert np.array_equal(read_image(tmp_path / "g.bmp"), grey)
    assert np.abs(read_image(tmp_path / "rgb.jpg").astype(int) - grey).max() <= 3
    assert read_image(tmp_path / "pal.tif").shape == (32, 40)
    d = read_image(tmp_path / "d16.tif")
    assert d.dtype == np.uint16 and np.array_equal(d, deep)
    f = to_float01(d)
    assert f.dtype == np.float32 and 0 <= f.min() and f.max() <= 1


def test_16bit_rgb_tiff_via_tifffile(tmp_path):
    import tifffile

    rgb = np.random.default_rng(0).integers(0, 65535, (24, 30, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb, photometric="rgb")
    out = read_image(tmp_path / "rgb16.tif")
    assert out.shape == (24, 30) and out.dtype == np.uint16


def test_real_mfish_images():
    from conftest import require_data

    folder = require_data("adir-mfish", "A01__XY")
    d = read_image(folder / "A0101XYD.tif")
    k = read_label_map(folder / "A0101XYK.tif")
    assert d.dtype == np.uint8 and d.shape == k.shape == (517, 645)
    assert set(np.unique(k)) <= set(range(25)) | {255}


@pytest.mark.parametrize("content, problem", [(b"", "empty file"), (b"not an image at all", "cannot decode")])
def test_bad_files_name_the_file(tmp_path, content, problem):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(ImageReadError) as e:
        read_image(p)
    assert str(p) in str(e.value) and problem in str(e.value)


def test_missing_and_truncated(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "nope.tif")
    full = tmp_path / "full.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (200, 200), dtype=np.uint8)).save(full)
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[:500])
    with pytest.raises(ImageReadError, match="cut.png"):
        read_image(cut)


def test_list_images(tmp_path):
    for n in ("a.tif", "b.png", "c.txt"):
        (tmp_path / n).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.tif", "b.png"]
    assert [p.name for p in list_images(str(tmp_path / "*.png"))] == ["b.png"]
