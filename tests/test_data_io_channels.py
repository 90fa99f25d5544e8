"""The channel rule and the pixel size of read_image_with_info, on files written here."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin

from chromoseg.data.io import INFO_KEYS, ImageReadError, read_image, read_image_with_info

RNG = np.random.default_rng(11)
PLANES = RNG.integers(0, 4096, (3, 40, 50), dtype=np.uint16)  # DAPI, FITC, Cy3
NAMES = ["DAPI", "FITC", "Cy3"]


def _write(path, arr, **kw):
    import tifffile

    tifffile.imwrite(path, arr, **kw)
    return path


@pytest.fixture()
def ome(tmp_path):
    return _write(tmp_path / "cells.ome.tif", PLANES, ome=True,
                  metadata={"axes": "CYX", "Channel": {"Name": NAMES}, "PhysicalSizeX": 0.065,
                            "PhysicalSizeXUnit": "\u00b5m", "PhysicalSizeY": 0.065})


# ------------------------------------------------------------------------------------------------
# channels


def test_ome_channels_by_name_index_and_default(ome):
    arr, info = read_image_with_info(ome)  # default: the first, as read_image always read, with a warning
    assert np.array_equal(arr, PLANES[0]) and np.array_equal(read_image(ome), PLANES[0])
    assert info["format"] == "OME-TIFF" and info["channels"] == NAMES and info["channel"] == "DAPI"
    assert any("3 channels" in w and "DAPI, FITC, Cy3" in w for w in info["warnings"])
    for request, k in [("dapi", 0), ("DAPI", 0), ("fitc", 1), (" Cy3 ", 2), (2, 2), ("1", 1), (np.int64(1), 1)]:
        arr, info = read_image_with_info(ome, channel=request)
        assert np.array_equal(arr, PLANES[k]) and info["channel"] == NAMES[k] and info["channel_index"] == k
        assert not any("channels" in w for w in info["warnings"])
    assert json.loads(json.dumps(info)) == info  # ready for images.json


def test_unknown_channel_is_one_line_naming_the_file_and_the_channels(ome):
    for request, says in [("TRITC", "no channel named 'TRITC': the file has DAPI, FITC, Cy3"),
                          (3, "no channel 3: the file has 3 (DAPI, FITC, Cy3"), ("7", "no channel 7")]:
        with pytest.raises(ImageReadError) as e:
            read_image_with_info(ome, channel=request)
        assert str(e.value).startswith(str(ome)) and says in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(TypeError):
        read_image_with_info(ome, channel=1.5)


def test_ome_fluor_answers_too_and_a_named_single_channel_must_match(tmp_path):
    import tifffile

    p = tmp_path / "fluor.ome.tif"
    with tifffile.TiffWriter(p, ome=True) as tw:
        tw.write(PLANES[:2], metadata={"axes": "CYX", "Channel": {"Name": ["Ch1", "Ch2"], "Fluor": ["DAPI", "FITC"]}})
    arr, info = read_image_with_info(p, channel="fitc")
    assert np.array_equal(arr, PLANES[1]) and info["channel"] == "Ch2"
    one = _write(tmp_path / "one.ome.tif", PLANES[1], ome=True, metadata={"axes": "YX", "Channel": {"Name": ["FITC"]}})
    arr, info = read_image_with_info(one)
    assert np.array_equal(arr, PLANES[1]) and info["channels"] == ["FITC"] and info["warnings"] == []
    assert read_image_with_info(one, channel="fitc")[1]["channel"] == "FITC"
    with pytest.raises(ImageReadError, match="no channel named 'DAPI': the file has FITC"):
        read_image_with_info(one, channel="DAPI")  # named, and not DAPI: refused, not read as if it were


def test_imagej_hyperstack_labels_and_plain_stacks_by_index(tmp_path):
    ij = _write(tmp_path / "ij.tif", PLANES, imagej=True, metadata={"axes": "CYX", "Labels": NAMES})
    arr, info = read_image_with_info(ij, channel="cy3")
    assert info["format"] == "ImageJ TIFF" and info["channels"] == NAMES and np.array_equal(arr, PLANES[2])
    pages = tmp_path / "pages.tif"
    for plane in PLANES:
        _write(pages, plane, append=True, metadata=None)
    arr, info = read_image_with_info(pages)
    assert np.array_equal(arr, PLANES[0]) and info["channels"] == ["plane 0", "plane 1", "plane 2"]
    assert np.array_equal(read_image_with_info(pages, channel=2)[0], PLANES[2])
    with pytest.raises(ImageReadError, match="no channel named 'DAPI'"):
        read_image_with_info(pages, channel="DAPI")
    one_page_stack = _write(tmp_path / "stack.tif", PLANES.astype(np.float32), photometric="minisblack")
    arr, info = read_image_with_info(one_page_stack, channel=1)
    assert arr.dtype == np.uint16 and info["channel_index"] == 1


def test_other_axes_give_their_first_plane_with_a_warning(tmp_path):
    zc = RNG.integers(0, 4096, (2, 3, 40, 50), dtype=np.uint16)
    p = _write(tmp_path / "zc.ome.tif", zc, ome=True, metadata={"axes": "ZCYX", "Channel": {"Name": NAMES}})
    arr, info = read_image_with_info(p, channel="FITC")
    assert np.array_equal(arr, zc[0, 1]) and any("2 planes along its Z axis" in w for w in info["warnings"])


def test_rgb_becomes_grey_as_before_or_gives_a_band(tmp_path):
    rgb = RNG.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    luma = np.array(Image.fromarray(rgb).convert("L"))
    tif = _write(tmp_path / "gband_rgb.tif", rgb, photometric="rgb")
    png = tmp_path / "gband_rgb.png"
    Image.fromarray(rgb).save(png)
    for path in (tif, png):
        arr, info = read_image_with_info(path)
        assert np.array_equal(arr, luma) and info["channel"] == "luma" and info["channel_index"] is None
        assert info["channels"] == ["R", "G", "B"] and "luma" in info["channel_rule"]
        assert np.array_equal(read_image(path), luma)
        for request, k in [("G", 1), ("green", 1), ("r", 0), (2, 2), ("BLUE", 2)]:
            arr, info = read_image_with_info(path, channel=request)
            assert np.array_equal(arr, rgb[..., k]) and info["channel"] == "RGB"[k]
        assert np.array_equal(read_image_with_info(path, channel="grey")[0], luma)
        with pytest.raises(ImageReadError, match="no channel named 'DAPI': the file has R, G, B"):
            read_image_with_info(path, channel="DAPI")


def test_a_grey_file_has_one_channel(tmp_path):
    grey = RNG.integers(0, 256, (40, 50), dtype=np.uint8)
    for path in (_write(tmp_path / "g.tif", grey), tmp_path / "g.png"):
        Image.fromarray(grey).save(tmp_path / "g.png")
        arr, info = read_image_with_info(path)
        assert np.array_equal(arr, grey) and info["channel"] == "grey" and info["channels"] == ["grey"]
        assert info["warnings"] == []
        arr, info = read_image_with_info(path, channel="DAPI")  # nothing to choose from: read, and said
        assert np.array_equal(arr, grey) and any("one unnamed grey channel" in w for w in info["warnings"])
        assert read_image_with_info(path, channel=0)[1]["channel"] == "grey"
        with pytest.raises(ImageReadError, match="no channel 1"):
            read_image_with_info(path, channel=1)


def test_info_has_its_keys_for_every_reader(tmp_path, ome):
    grey = RNG.integers(0, 256, (40, 50), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.jpg")
    Image.fromarray(grey).save(tmp_path / "g.bmp")
    for path in (ome, tmp_path / "g.jpg", tmp_path / "g.bmp"):
        _, info = read_image_with_info(path)
        assert set(INFO_KEYS) <= set(info) and info["file"] == str(path)
        assert isinstance(info["warnings"], list)


# ------------------------------------------------------------------------------------------------
# pixel size


def test_pixel_size_from_ome(ome, tmp_path):
    assert read_image_with_info(ome)[1]["pixel_size_um"] == 0.065
    assert "OME PhysicalSizeX" in read_image_with_info(ome)[1]["pixel_size_source"]
    nm = _write(tmp_path / "nm.ome.tif", PLANES[0], ome=True,
                metadata={"axes": "YX", "PhysicalSizeX": 108.3, "PhysicalSizeXUnit": "nm"})
    assert read_image_with_info(nm)[1]["pixel_size_um"] == pytest.approx(0.1083)
    bare = _write(tmp_path / "bare.ome.tif", PLANES[0], ome=True, metadata={"axes": "YX"})
    info = read_image_with_info(bare)[1]
    assert info["pixel_size_um"] is None and "no OME PhysicalSizeX" in info["pixel_size_note"]


def test_pixel_size_from_tiff_resolution_tags(tmp_path):
    g = PLANES[0]
    cases = [
        (dict(resolution=(1 / 0.65e-4, 1 / 0.65e-4), resolutionunit="CENTIMETER"), 0.65),  # 15384.6 px/cm
        (dict(resolution=(50800, 50800), resolutionunit="INCH"), 0.5),
        (dict(resolution=(72, 72), resolutionunit="INCH"), None),  # 72 dpi: an image program's default
        (dict(resolution=(300, 300), resolutionunit="INCH"), None),
        (dict(resolution=(15384.6, 15384.6), resolutionunit="NONE"), None),  # unit none
        (dict(), None),  # tifffile's 1/1 with unit none
    ]
    for i, (kw, want) in enumerate(cases):
        info = read_image_with_info(_write(tmp_path / f"r{i}.tif", g, **kw))[1]
        assert (info["pixel_size_um"] == pytest.approx(want, rel=1e-4)) if want else info["pixel_size_um"] is None, kw
        assert (info["pixel_size_source"] is None) == (want is None) and (info["pixel_size_note"] is None) == bool(want)
    no_unit = TiffImagePlugin.ImageFileDirectory_v2()
    no_unit[282], no_unit[283] = 72.0, 72.0  # XResolution with no ResolutionUnit tag at all
    Image.fromarray((g >> 4).astype(np.uint8)).save(tmp_path / "nounit.tif", tiffinfo=no_unit)
    info = read_image_with_info(tmp_path / "nounit.tif")[1]
    assert info["pixel_size_um"] is None and "without ResolutionUnit" in info["pixel_size_note"]
    Image.fromarray((g >> 4).astype(np.uint8)).save(tmp_path / "none.tif")
    assert read_image_with_info(tmp_path / "none.tif")[1]["pixel_size_um"] is None


def test_pixel_size_from_imagej_and_png(tmp_path):
    ij = _write(tmp_path / "ij.tif", PLANES, imagej=True, resolution=(1 / 0.1, 1 / 0.1),
                metadata={"axes": "CYX", "unit": "micron"})
    info = read_image_with_info(ij)[1]
    assert info["pixel_size_um"] == pytest.approx(0.1) and "ImageJ" in info["pixel_size_source"]
    grey = (PLANES[0] >> 4).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "fine.png", dpi=(50800, 50800))  # pHYs, pixels per metre
    Image.fromarray(grey).save(tmp_path / "screen.png", dpi=(96, 96))
    assert read_image_with_info(tmp_path / "fine.png")[1]["pixel_size_um"] == pytest.approx(0.5, rel=1e-3)
    assert read_image_with_info(tmp_path / "screen.png")[1]["pixel_size_um"] is None
    assert read_image_with_info(tmp_path / "screen.png")[1]["pixel_size_note"]


def test_image_record_for_images_json(ome):
    from chromoseg.data.io import image_record

    _, info = read_image_with_info(ome, channel="fitc")
    rec = image_record(info)
    assert rec == {"channel": "FITC", "channel_index": 1, "channels": NAMES, "pixel_size_um": 0.065,
                   "pixel_size_source": "OME PhysicalSizeX 0.065 \u00b5m"}
    rec = image_record(info, pixel_size_um=0.1)
    assert rec["pixel_size_um"] == 0.1 and rec["pixel_size_um_in_file"] == 0.065 and "given" in rec["pixel_size_source"]
    assert json.loads(json.dumps(rec)) == rec
    # what predict would pass back to read the same plane again (--skip-existing re-reads earlier images)
    again, _ = read_image_with_info(ome, channel=rec["channel_index"])
    assert np.array_equal(again, PLANES[1])


def test_the_report_line_says_channel_pixel_size_and_scale(ome, tmp_path):
    """What report.html / report.csv show of how an image was read (issue 29: the channel and scale
    used, written beside the results)."""
    from chromoseg.data.io import describe_read, image_record, report_fields

    _, info = read_image_with_info(ome, channel="fitc")
    line = describe_read({**image_record(info), "scale_rule": "pixel size", "scale": 0.13})
    assert line == ("channel FITC (index 1 of DAPI, FITC, Cy3); 0.065 \u00b5m per pixel (OME PhysicalSizeX "
                    "0.065 \u00b5m); scale rule: pixel size (\u00d70.13)")
    given = describe_read(image_record(info, pixel_size_um=0.1))
    assert "0.1 \u00b5m per pixel (given (--pixel-size); the file says 0.065)" in given
    Image.fromarray(RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    _, rgb = read_image_with_info(tmp_path / "rgb.png")
    assert describe_read(image_record(rgb)) == "R/G/B converted to grey (luma); pixel size unknown"
    _, grey = read_image_with_info(_write(tmp_path / "g.tif", PLANES[0]))
    fields = report_fields({**image_record(grey), "scale_rule": "framing"})
    assert fields == {"read": "grey (one channel); pixel size unknown; scale rule: framing", "channel": "grey",
                      "pixel_size_um": None, "pixel_size_source": None, "scale_rule": "framing"}
