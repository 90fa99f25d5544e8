"""TIFF as labs write it: layouts, codecs, bit depths, a listed strip that is not there, true
truncation. Every file is written here (tmp_path) beside its plain twin."""
from __future__ import annotations

import logging
import random
import struct

import numpy as np
import pytest
from PIL import Image

from chromoseg.data.io import ImageReadError, bit_depth, read_image, read_image_with_info

RNG = np.random.default_rng(7)
#: a metaphase-sized-down 16-bit image with 12 bits of data, and its 8-bit version
G16 = RNG.integers(0, 4096, (96, 120), dtype=np.uint16)
G8 = (G16 >> 4).astype(np.uint8)


def _write(path, arr, **kw):
    import tifffile

    tifffile.imwrite(path, arr, **kw)
    return path


# ------------------------------------------------------------------------------------------------
# the files the project already read give the same pixels as before (Pillow's reading)


def _pillow_grey(path) -> np.ndarray:
    """What read_image returned before tifffile came first: Pillow, colour converted with convert("L")."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("L", "I;16", "I;16B", "I;16L"):
            return np.array(im)
        return np.array(im.convert("L"))


def _pillow_written(tmp_path):
    rgb = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    files = {}
    Image.fromarray(G8).save(files.setdefault("grey8", tmp_path / "grey8.tif"))
    Image.fromarray(G8).save(files.setdefault("grey8_lzw", tmp_path / "grey8_lzw.tif"), compression="tiff_lzw")
    Image.fromarray(G8).save(files.setdefault("grey8_deflate", tmp_path / "grey8_deflate.tif"), compression="tiff_adobe_deflate")
    Image.fromarray(G16).save(files.setdefault("grey16", tmp_path / "grey16.tif"))
    Image.fromarray(rgb).save(files.setdefault("rgb8", tmp_path / "rgb8.tif"))
    Image.fromarray(rgb).save(files.setdefault("rgb8_lzw", tmp_path / "rgb8_lzw.tif"), compression="tiff_lzw")
    Image.fromarray(rgb).convert("RGBA").save(files.setdefault("rgba8", tmp_path / "rgba8.tif"))
    Image.fromarray(rgb).quantize(40).save(files.setdefault("palette", tmp_path / "palette.tif"))
    Image.fromarray(G8).convert("P").save(files.setdefault("palette_lzw", tmp_path / "palette_lzw.tif"), compression="tiff_lzw")
    Image.fromarray(G8 > 128).save(files.setdefault("bilevel", tmp_path / "bilevel.tif"))
    Image.fromarray(rgb).convert("CMYK").save(files.setdefault("cmyk", tmp_path / "cmyk.tif"))
    return files


def _tifffile_written(tmp_path):
    files = {}
    files["miniswhite8"] = _write(tmp_path / "mw8.tif", G8, photometric="miniswhite")
    files["bilevel_tifffile"] = _write(tmp_path / "bool.tif", G8 > 100)
    files["grey4"] = _write(tmp_path / "grey4.tif", G8 >> 4, bitspersample=4)
    files["grey_alpha"] = _write(tmp_path / "la.tif", np.stack([G8, 255 - G8], -1), photometric="minisblack",
                                 extrasamples=["unassalpha"])
    files["rgb_planar"] = _write(tmp_path / "planar.tif", RNG.integers(0, 256, (3, 40, 50), dtype=np.uint8),
                                 photometric="rgb", planarconfig="separate")
    files["cmyk_tifffile"] = _write(tmp_path / "cmyk2.tif", RNG.integers(0, 256, (40, 50, 4), dtype=np.uint8),
                                    photometric="separated")
    return files


def test_tiffs_pillow_reads_give_the_same_pixels_as_before(tmp_path):
    files = {**_pillow_written(tmp_path), **_tifffile_written(tmp_path)}
    for name, path in files.items():
        arr, info = read_image_with_info(path)
        want = _pillow_grey(path)
        assert info["reader"] == "tifffile", name
        assert arr.dtype == want.dtype and np.array_equal(arr, want), name
        assert np.array_equal(read_image(path), arr), name


# ------------------------------------------------------------------------------------------------
# layouts, codecs, bit depths: each the same pixels as its plain twin


@pytest.mark.parametrize("kw", [
    {}, {"compression": "lzw"}, {"compression": "zlib"}, {"compression": "zstd"}, {"compression": "lzma"},
    {"compression": "packbits"}, {"rowsperstrip": 7}, {"tile": (32, 32)}, {"tile": (16, 48), "compression": "zlib"},
    {"bigtiff": True}, {"bigtiff": True, "tile": (32, 32), "compression": "zstd"}, {"predictor": True, "compression": "zlib"},
], ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()) or "plain")
@pytest.mark.parametrize("data", [G8, G16], ids=["8bit", "16bit"])
def test_layouts_and_codecs_read_as_the_plain_twin(tmp_path, kw, data):
    plain = read_image(_write(tmp_path / "plain.tif", data))
    arr, info = read_image_with_info(_write(tmp_path / "twin.tif", data, **kw))
    assert arr.dtype == data.dtype and np.array_equal(arr, plain) and np.array_equal(arr, data)
    assert info["warnings"] == [] and info["format"].startswith("TIFF")
    assert info["format"].endswith("(BigTIFF)") == bool(kw.get("bigtiff"))


def test_jpeg_in_tiff_is_lossy_but_close(tmp_path):
    smooth = np.add.outer(np.arange(96), np.arange(120)).astype(np.uint8)
    arr, info = read_image_with_info(_write(tmp_path / "j.tif", smooth, compression="jpeg"))
    assert info["compression"] == "JPEG" and arr.dtype == np.uint8
    assert np.abs(arr.astype(int) - smooth).mean() < 2
    rgb = np.stack([smooth, smooth, smooth], -1)
    arr = read_image(_write(tmp_path / "jrgb.tif", rgb, compression="jpeg", photometric="rgb"))
    assert arr.shape == smooth.shape and np.abs(arr.astype(int) - smooth).mean() < 2


@pytest.mark.parametrize("bits", [12, 14])
def test_packed_12_and_14_bit(tmp_path, bits):
    data = RNG.integers(0, 2 ** bits, (40, 50), dtype=np.uint16)
    arr, info = read_image_with_info(_write(tmp_path / f"p{bits}.tif", data, bitspersample=bits))
    assert info["bits_per_sample"] == bits and arr.dtype == np.uint16 and np.array_equal(arr, data)
    assert bit_depth(arr) == bits


def test_twelve_bit_jpeg_tiff(tmp_path):
    data = (np.add.outer(np.arange(40), np.arange(50)) * 40).astype(np.uint16)
    arr = read_image(_write(tmp_path / "j12.tif", data, bitspersample=12, compression="jpeg"))
    assert arr.dtype == np.uint16 and np.abs(arr.astype(int) - data).max() <= 8


def test_float_and_wide_integers(tmp_path):
    f = np.linspace(-1.5, 2.5, 40 * 50, dtype=np.float32).reshape(40, 50)
    arr = read_image(_write(tmp_path / "f.tif", f))
    assert arr.dtype == np.uint16 and arr.min() == 0 and arr.max() == 65535
    f64 = read_image(_write(tmp_path / "f64.tif", f.astype(np.float64), compression="zlib"))
    assert np.abs(f64.astype(int) - arr).max() <= 1
    nan = f.copy()
    nan[0, :5] = np.nan
    assert read_image(_write(tmp_path / "nan.tif", nan)).dtype == np.uint16
    assert np.array_equal(read_image(_write(tmp_path / "i32.tif", G16.astype(np.int32))), G16)
    with pytest.raises(ImageReadError, match="out of 16-bit range") as e:
        read_image(_write(tmp_path / "neg.tif", G16.astype(np.int16) - 100))
    assert "neg.tif" in str(e.value)
    with pytest.raises(ImageReadError, match="finite"):
        read_image(_write(tmp_path / "allnan.tif", np.full((40, 50), np.nan, np.float32)))


def test_half_float_reads_as_its_single_float_twin(tmp_path):
    """float16 samples (what some deconvolution and analysis tools write) stretched over 0-65535 without
    overflowing in their own precision (it gave wrong pixels and RuntimeWarnings in problems.json)."""
    f = (G8.astype(np.float32) / 255).astype(np.float16)
    twin = read_image(_write(tmp_path / "f32.tif", f.astype(np.float32)))
    arr, info = read_image_with_info(_write(tmp_path / "f16.tif", f))
    assert arr.dtype == np.uint16 and arr.min() == 0 and arr.max() == 65535
    assert np.array_equal(arr, twin) and info["warnings"] == []


def test_sixteen_bit_rgb_keeps_its_depth(tmp_path):
    rgb = RNG.integers(0, 65535, (24, 30, 3), dtype=np.uint16)
    arr, info = read_image_with_info(_write(tmp_path / "rgb16.tif", rgb, photometric="rgb", compression="zlib"))
    want = np.clip(np.rint(rgb.astype(np.float64) @ [0.299, 0.587, 0.114]), 0, 65535).astype(np.uint16)
    assert arr.dtype == np.uint16 and np.array_equal(arr, want) and info["channel"] == "luma"


def test_ome_tiff_and_pyramid_level_zero(tmp_path):
    import tifffile

    path = tmp_path / "pyr.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(G16, subifds=1, tile=(32, 32), compression="zlib", metadata={"axes": "YX"})
        tw.write(G16[::2, ::2], subfiletype=1, tile=(32, 32), compression="zlib")
    arr, info = read_image_with_info(path)
    assert info["format"] == "OME-TIFF" and np.array_equal(arr, G16)


# ------------------------------------------------------------------------------------------------
# strip tags that list a strip the file does not have; true truncation


def _tag_value(b: bytes, pos: int, typ: int) -> int:
    return struct.unpack_from("<H" if typ == 3 else "<I", b, pos + 8)[0]


def list_a_strip_that_is_not_there(path):
    """Patch a one-strip classic little-endian TIFF, as the real files of another lab are: RowsPerStrip
    is the image height, yet StripOffsets / StripByteCounts list two strips, the second at the end of
    the file (nothing of it there). tifffile reads such files with a warning; Pillow calls them
    truncated."""
    b = bytearray(path.read_bytes())
    assert b[:4] == b"II*\x00"
    ifd = struct.unpack_from("<I", b, 4)[0]
    entries = {}
    for i in range(struct.unpack_from("<H", b, ifd)[0]):
        pos = ifd + 2 + 12 * i
        code, typ, count = struct.unpack_from("<HHI", b, pos)
        entries[code] = (pos, typ, count)
    assert entries[273][2] == entries[279][2] == 1, "the twin must have one strip"
    height = _tag_value(b, *entries[257][:2])
    offset, count = _tag_value(b, *entries[273][:2]), _tag_value(b, *entries[279][:2])
    table = len(b)
    missing_at = table + 16  # the end of the patched file: the second strip is not there
    b += struct.pack("<2I", offset, missing_at) + struct.pack("<2I", count, count)
    struct.pack_into("<HHII", b, entries[273][0], 273, 4, 2, table)
    struct.pack_into("<HHII", b, entries[279][0], 279, 4, 2, table + 8)
    struct.pack_into("<HHII", b, entries[278][0], 278, 4, 1, height)
    path.write_bytes(bytes(b))
    return path


@pytest.mark.parametrize("kw", [{}, {"compression": "lzw"}, {"compression": "zlib"}], ids=["plain", "lzw", "deflate"])
@pytest.mark.parametrize("data", [G8, G16], ids=["8bit", "16bit"])
def test_a_listed_strip_that_is_not_there_reads_as_its_twin_with_the_warning_kept(tmp_path, kw, data, caplog):
    twin = _write(tmp_path / "twin.tif", data, rowsperstrip=data.shape[0], **kw)
    odd = tmp_path / "odd.tif"
    odd.write_bytes(twin.read_bytes())
    list_a_strip_that_is_not_there(odd)
    with caplog.at_level(logging.DEBUG):
        arr, info = read_image_with_info(odd)
    assert np.array_equal(arr, read_image(twin)) and np.array_equal(arr, data)
    text = " | ".join(info["warnings"])
    assert "incorrect StripOffsets count (2 != 1)" in text  # tifffile's own warning, kept
    assert "list 2 strips but the image" in text and "beyond the end of the file" in text
    assert all("\n" not in w for w in info["warnings"])
    assert not [r for r in caplog.records if r.name == "tifffile"], "captured, not printed"
    assert np.array_equal(read_image(odd), data)  # the plain API reads it too


@pytest.mark.parametrize("kw", [
    {}, {"compression": "lzw"}, {"compression": "zlib"}, {"rowsperstrip": 16}, {"tile": (32, 32)},
    {"tile": (32, 32), "compression": "zstd"}, {"bigtiff": True}, {"compression": "jpeg"},
], ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()) or "plain")
def test_a_file_cut_in_its_image_data_is_truncated(tmp_path, kw):
    data = G8 if kw.get("compression") == "jpeg" else G16
    full = _write(tmp_path / "full.tif", data, **kw)
    raw = full.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(raw[: len(raw) * 3 // 4])  # tifffile writes its directory first: the cut is in the data
    with pytest.raises(ImageReadError) as e:
        read_image_with_info(cut)
    msg = str(e.value)
    assert msg.startswith(str(cut)) and "\n" not in msg
    assert "file is truncated: it ends at byte" in msg and f"byte {len(raw) * 3 // 4}" in msg


def test_truncated_when_the_directory_follows_the_data(tmp_path):
    """libtiff's order (data, then directory), as most lab software writes: a cut loses the directory."""
    p = tmp_path / "libtiff_order.tif"
    Image.fromarray(G8).save(p, compression="tiff_lzw")  # Pillow writes through libtiff: directory last
    ifd = struct.unpack_from("<I", p.read_bytes(), 4)[0]
    assert ifd > 1000
    raw = p.read_bytes()
    (tmp_path / "cut.tif").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageReadError, match="truncated: its header points to its first image directory"):
        read_image(tmp_path / "cut.tif")
    (tmp_path / "tiny.tif").write_bytes(raw[:3])
    with pytest.raises(ImageReadError, match="truncated: it ends at byte 3, inside its TIFF header"):
        read_image(tmp_path / "tiny.tif")


def test_every_cut_of_a_small_tiff_is_refused_as_truncated(tmp_path):
    for kw in ({}, {"compression": "lzw"}, {"tile": (16, 16), "compression": "zlib"}, {"bigtiff": True}):
        raw = _write(tmp_path / "full.tif", G16[:24, :32], **kw).read_bytes()
        for n in range(1, len(raw), 11):
            (tmp_path / "cut.tif").write_bytes(raw[:n])
            with pytest.raises(ImageReadError, match="truncated"):
                read_image(tmp_path / "cut.tif")


def test_missing_strip_data_and_disagreeing_tags_are_not_called_truncated(tmp_path):
    twin = _write(tmp_path / "two.tif", G8, rowsperstrip=48, compression="lzw")
    b = bytearray(twin.read_bytes())
    import tifffile

    with tifffile.TiffFile(twin) as t:
        tag = t.pages[0].tags["StripByteCounts"]
        pos, typ = tag.valueoffset, tag.dtype
    struct.pack_into("<H" if typ == 3 else "<I", b, pos + (2 if typ == 3 else 4), 0)  # strip 2: 0 bytes
    (tmp_path / "hole.tif").write_bytes(bytes(b))
    with pytest.raises(ImageReadError, match="image data missing: strip 2 of 2 .rows 48-95. has no data") as e:
        read_image(tmp_path / "hole.tif")
    assert "truncated" not in str(e.value)


def test_broken_ome_xml_is_read_as_a_plain_tiff_with_one_clean_warning(tmp_path):
    """OME-XML that is not well-formed: the pixels are read (its planes by index) and the warning says
    in one line that the OME metadata was not used, without tifffile's object repr."""
    p = _write(tmp_path / "bad.ome.tif", np.stack([G8, 255 - G8]), ome=True, photometric="minisblack",
               metadata={"axes": "CYX", "Channel": {"Name": ["DAPI", "FITC"]}, "PhysicalSizeX": 0.1})
    b = bytearray(p.read_bytes())
    i = b.find(b"<OME")
    b[i + 10:i + 20] = b"<<<<<<<<<<"
    p.write_bytes(bytes(b))
    arr, info = read_image_with_info(p, channel=1)
    assert np.array_equal(arr, 255 - G8) and info["pixel_size_um"] is None
    (ome,) = [w for w in info["warnings"] if "OME" in w]
    assert ome.startswith("tifffile: OME series raised ParseError(") and "<tifffile" not in ome
    assert ome.endswith("the OME metadata was not used (its channel names and pixel size were not read)")


def test_no_traceback_for_corrupt_tiffs(tmp_path):
    """Bytes of a TIFF's header and directory changed at random: read, or one ImageReadError line."""
    raw = _write(tmp_path / "ok.tif", G16[:40, :50], compression="zlib").read_bytes()
    rnd = random.Random(3)
    for i in range(150):
        b = bytearray(raw)
        for _ in range(rnd.randint(1, 4)):
            b[rnd.randrange(0, 250)] = rnd.randrange(256)
        p = tmp_path / "bad.tif"
        p.write_bytes(bytes(b))
        try:
            arr, info = read_image_with_info(p)
        except ImageReadError as err:
            assert str(err).startswith(str(p)) and "\n" not in str(err)
        else:
            assert arr.ndim == 2 and arr.dtype in (np.uint8, np.uint16)
    (tmp_path / "magic.tif").write_bytes(b"II*\x00" + bytes(rnd.randrange(256) for _ in range(300)))
    with pytest.raises(ImageReadError, match="magic.tif"):
        read_image(tmp_path / "magic.tif")
