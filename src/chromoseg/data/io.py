"""Reading microscope images into grey arrays.

Read: TIFF through tifffile (with imagecodecs): classic and BigTIFF, strips or tiles, uncompressed,
LZW, deflate, JPEG, zstd and the other codecs imagecodecs has; 1-16-bit integer and float samples;
grey, palette, RGB(A), CMYK; multi-page, OME-TIFF and ImageJ stacks. PNG, JPEG and BMP through
Pillow (and any TIFF tifffile cannot decode). The model's input is grey: colour images are converted
with the ITU-R 601 luma weights (Pillow's ``convert("L")``), as they always were.

:func:`read_image` gives the grey array; :func:`read_image_with_info` also picks a channel (the rule
in its docstring) and says which one it read, the pixel size in micrometres and what the readers
warned about.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from chromoseg.data.tiff import (ReadProblem, capture_reader_warnings, is_tiff, one_line, pixel_size_from_pillow,
                                 read_tiff, select_channel)
# the polarity rule lives with the stains; importable from here as before
from chromoseg.data.stain import light_background  # noqa: F401

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
TRUNCATED = "file is truncated: it ends before its image data does (an interrupted copy or download?)"
#: bit depths a 16-bit container is read as (cameras write 12 or 14 bits into 16-bit files; 8-bit
#: data is sometimes stored in 16 bits)
BIT_DEPTHS = (8, 12, 14, 16)
#: the keys every info dict of :func:`read_image_with_info` has
INFO_KEYS = ("file", "format", "reader", "channels", "channel", "channel_index", "channel_rule",
             "pixel_size_um", "pixel_size_source", "pixel_size_note", "orientation", "orientation_applied",
             "warnings")

#: the EXIF / TIFF ``Orientation`` tag (274): how the stored rows and columns must be turned to show
#: the image upright, as Pillow's ``ImageOps.exif_transpose`` turns them (1: as stored)
ORIENTATIONS = {
    2: ("mirrored left-right", np.fliplr),
    3: ("rotated 180\u00b0", lambda a: np.rot90(a, 2)),
    4: ("mirrored top-bottom", np.flipud),
    5: ("transposed (mirrored about the main diagonal)", lambda a: a.T),
    6: ("rotated 90\u00b0 clockwise", lambda a: np.rot90(a, -1)),
    7: ("transversed (mirrored about the anti-diagonal)", lambda a: np.rot90(a, 2).T),
    8: ("rotated 90\u00b0 anticlockwise", lambda a: np.rot90(a, 1)),
}


class ImageReadError(ValueError):
    """An image file that cannot be used; the message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def float_to_uint16(arr: np.ndarray) -> np.ndarray:
    """Float pixels stretched from their finite minimum to maximum over 0-65535 (NaN: the minimum),
    computed in at least single precision (half floats overflow at 65504)."""
    arr = np.asarray(arr)
    arr = arr.astype(np.promote_types(arr.dtype, np.float32), copy=False)
    finite = np.isfinite(arr)
    if not finite.any():
        raise ReadProblem("no finite pixel values (all NaN or infinite)")
    lo, hi = float(arr[finite].min()), float(arr[finite].max())
    scale = 65535.0 / (hi - lo) if hi > lo else 0.0
    return np.clip((np.nan_to_num(arr, nan=lo, posinf=hi, neginf=lo) - lo) * scale, 0, 65535).astype(np.uint16)


_float_to_uint16 = float_to_uint16  # the old private name


def to_uint16(arr: np.ndarray) -> np.ndarray:
    """uint8 / uint16 as they are; other integers as uint16 when their values fit (else refused)."""
    if arr.dtype in (np.uint8, np.uint16):
        return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype.kind not in "ui":
        raise ReadProblem(f"unsupported pixel type {arr.dtype}")
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo < 0 or hi > 65535:
        raise ReadProblem(f"pixel values out of 16-bit range [{lo}, {hi}] ({arr.dtype})")
    return arr.astype(np.uint16)


COLOUR_MODES = {"RGB": "RGB", "RGBA": "RGB", "RGBX": "RGB", "RGBa": "RGB", "P": "RGB", "PA": "RGB",
                "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "CMYK": "CMYK"}


def _pil_to_array(im) -> np.ndarray:
    """A Pillow image as grey uint8 / uint16 (colour: ``convert("L")``)."""
    mode = im.mode
    if mode in ("L", "I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.array(im)
        return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))
    if mode in ("P", "PA", "1", "LA", "La", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.array(im.convert("L"))
    if mode == "I":  # 32-bit int: usually 16-bit data in a wider container
        return to_uint16(np.array(im))
    if mode == "F":
        return float_to_uint16(np.array(im))
    raise ReadProblem(f"unsupported pixel mode {mode!r}")


def _pillow_select(im, channel) -> tuple[np.ndarray, dict]:
    """The channel rule on a Pillow image: grey modes have one channel; colour modes R, G, B (CMYK:
    C, M, Y, K), converted to grey (luma) unless a band is asked for."""
    mode = im.mode
    if mode in COLOUR_MODES:
        labels = ["R", "G", "B"] if COLOUR_MODES[mode] == "RGB" else ["C", "M", "Y", "K"]
        band, rule, warns = select_channel(channel, labels, colour=True, named=False)
        if band is None:
            arr = _pil_to_array(im)
        else:
            src = im if mode in ("RGB", "CMYK") else im.convert(COLOUR_MODES[mode])
            arr = np.ascontiguousarray(np.array(src)[..., band])
        return arr, dict(channels=labels, channel_index=band, channel="luma" if band is None else labels[band],
                         channel_rule=rule, warnings=warns)
    idx, rule, warns = select_channel(channel, ["grey"], colour=False, named=False)
    return _pil_to_array(im), dict(channels=["grey"], channel_index=idx, channel="grey", channel_rule=rule,
                                   warnings=warns)


def _pillow_orientation(im) -> int | None:
    """The image's ``Orientation`` tag (EXIF in a JPEG, PNG ``eXIf`` or WebP; a TIFF's own tag), or None."""
    try:
        value = im.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - a broken EXIF block: as if it had none (the pixels are fine)
        return None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def apply_orientation(arr: np.ndarray, orientation) -> tuple[np.ndarray, str | None]:
    """``arr`` turned upright by its ``Orientation`` tag value (EXIF / TIFF tag 274: 1-8, the turns
    Pillow's ``ImageOps.exif_transpose`` makes) and what was done (None: nothing; 1, a missing tag
    and values outside 1-8 leave the image as stored)."""
    try:
        code = int(orientation) if orientation is not None else None
    except (TypeError, ValueError):
        code = None
    if code not in ORIENTATIONS:
        return arr, None
    what, turn = ORIENTATIONS[code]
    return np.ascontiguousarray(turn(arr)), f"{what} (orientation tag {code})"


def _pillow_read(path: Path, channel, *, tiff_fallback: bool = False) -> tuple[np.ndarray, dict]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.seek(0)
            info: dict = {"format": im.format, "reader": "Pillow", "mode": im.mode, "warnings": []}
            bits = getattr(im, "tag_v2", {}).get(258, (8,))  # TIFF BitsPerSample
            bits = bits if isinstance(bits, tuple) else (bits,)
            if max(bits) > 8 and not im.mode.startswith("I"):
                raise ReadProblem(f"{max(bits)}-bit {im.mode} TIFF: Pillow would drop bits")
            frames = getattr(im, "n_frames", 1) or 1
            if frames > 1:
                info["warnings"].append(f"the file holds {frames} frames: the first was read")
            im.load()
            arr, chinfo = _pillow_select(im, channel)
            info["warnings"].extend(chinfo.pop("warnings"))
            info.update(chinfo)
            px, source, note, warns = pixel_size_from_pillow(im)
            info.update(pixel_size_um=px, pixel_size_source=source, pixel_size_note=note)
            info["warnings"].extend(warns)
            info["orientation"] = _pillow_orientation(im)
            return arr, info
    except ReadProblem as p:
        raise ImageReadError(path, p.problem) from p
    except Exception as err:  # noqa: BLE001 - whatever the decoder says, one line naming the file
        if not tiff_fallback and "truncated" in str(err).lower():
            raise ImageReadError(path, TRUNCATED) from err
        raise ImageReadError(path, f"cannot decode image ({one_line(err)})") from err


def read_image_with_info(path, channel=None) -> tuple[np.ndarray, dict]:
    """Read an image as a 2-D grey array (``uint8`` or ``uint16``, as :func:`read_image`), choosing a
    channel, and say what was read.

    **Channel rule.** ``channel`` is None (default), a 0-based index (int, or a string of digits) or
    a name, matched case-insensitively:

    - ``None``: a grey image as it is; an RGB (or palette, CMYK) image converted to grey with the
      ITU-R 601 luma weights (an RGB capture of a G-band slide becomes grey); a file with several
      channels or planes (OME-TIFF channels, an ImageJ hyperstack, a multi-page TIFF, a stack of
      planes in one page) gives its first, with a warning naming them all. These are what
      :func:`read_image` has always read.
    - a name: an OME channel's ``Name`` or ``Fluor`` (``"dapi"`` finds ``DAPI``), an ImageJ
      channel label; for an RGB image ``R`` / ``red``, ``G`` / ``green``, ``B`` / ``blue``, or
      ``grey`` / ``gray`` / ``luma`` for the luma conversion. A grey file with a single unnamed
      channel is read for any name, with a warning (there is nothing to choose from).
    - an index: that channel or plane; for RGB 0, 1, 2 are R, G, B.
    - no such channel: :class:`ImageReadError` listing the channels the file has.

    Other axes (Z, T, positions) give their first plane, with a warning.

    **Pixel size** (``pixel_size_um``, micrometres per pixel, across): OME ``PhysicalSizeX`` (with
    ``PhysicalSizeXUnit``, default um); ImageJ's ``unit=`` with ``XResolution``; the TIFF
    ``XResolution`` with ``ResolutionUnit`` inch or centimetre; a PNG's ``pHYs``, a JPEG's or BMP's
    density. None when absent, when ResolutionUnit is none or missing, or when it gives a pixel
    over 10 um (72, 96, 300 dpi: what image programs write, never a microscope's sampling);
    ``pixel_size_note`` then says why.

    **Orientation.** A file whose ``Orientation`` tag (EXIF in a JPEG - what phones and many cameras
    write -, a PNG's ``eXIf``, TIFF tag 274) says it is stored turned or mirrored is read upright, as
    Pillow's ``ImageOps.exif_transpose`` and image viewers show it: orientation 6 (a camera held
    turned) stored 789 x 620 is read 620 x 789. ``orientation`` is the tag's value (None without
    one), ``orientation_applied`` what was done (``"rotated 90\u00b0 clockwise (orientation tag 6)"``;
    None when nothing). The pixel size stays the file's across (its rows).

    Returns ``(array, info)``; ``info`` has at least the keys of :data:`INFO_KEYS`: ``file``,
    ``format`` (``TIFF``, ``OME-TIFF``, ``ImageJ TIFF``, ``... (BigTIFF)``, ``PNG``, ...), ``reader``
    (``tifffile`` / ``Pillow``), ``channels`` (the labels of the channels: names, ``R``/``G``/``B``,
    ``grey``, ``channel k`` / ``plane k`` when unnamed), ``channel`` (the one read, or ``luma``),
    ``channel_index`` (None for luma), ``channel_rule`` (how it was chosen), ``pixel_size_um``,
    ``pixel_size_source``, ``pixel_size_note``, ``orientation``, ``orientation_applied`` and ``warnings`` (one-line strings: what the readers
    worked around, e.g. strip tags listing a strip the file does not have, and which plane of many
    was read; for ``problems.json``). TIFFs add ``compression``, ``photometric``,
    ``bits_per_sample``, ``axes``, ``shape`` and ``dtype`` of the file's image.

    Raises :class:`ImageReadError` (naming the file, one line) for any file that cannot be used:
    missing, empty, not an image, truly truncated (a strip or tile the image needs ends beyond the
    end of the file), no such channel, too small.
    """
    if channel is not None and (isinstance(channel, (bool, np.bool_)) or not isinstance(channel, (int, np.integer, str))):
        raise TypeError(f"channel must be None, a 0-based index or a name, not {channel!r}")
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise ImageReadError(path, "broken symbolic link (its target does not exist)")
    if not path.exists():
        raise ImageReadError(path, "no such file")
    if not path.is_file():
        raise ImageReadError(path, "not a file")
    try:
        empty = path.stat().st_size == 0
        tiff = not empty and is_tiff(path)
    except OSError as err:
        raise ImageReadError(path, f"cannot read the file ({one_line(err.strerror or err)})") from err
    if empty:
        raise ImageReadError(path, "empty file")
    info: dict = {k: None for k in INFO_KEYS}
    info.update(file=str(path), warnings=[])
    with capture_reader_warnings() as captured:
        if tiff:
            try:
                arr, more = read_tiff(path, channel)
            except ReadProblem as p:
                raise ImageReadError(path, p.problem) from p
            except Exception as err:  # noqa: BLE001 - tifffile could not: Pillow may (old JPEG, odd layouts)
                try:
                    arr, more = _pillow_read(path, channel, tiff_fallback=True)
                except ImageReadError as err2:
                    raise ImageReadError(path, f"cannot decode image (tifffile: {one_line(err, 200)}; "
                                               f"Pillow: {err2.problem})") from err
                more["warnings"].insert(0, f"tifffile could not read it ({one_line(err, 200)}): read by Pillow")
        else:
            arr, more = _pillow_read(path, channel)
    warns = more.pop("warnings") + captured
    info.update(more)
    arr, info["orientation_applied"] = apply_orientation(arr, info.get("orientation"))
    if info["orientation_applied"] and int(info["orientation"]) >= 5:  # rows and columns swapped
        warns = [w + " (wide and high as stored: the image was turned upright by its orientation tag)"
                 if w.startswith("pixels are not square") else w for w in warns]
    info["warnings"] = list(dict.fromkeys(w for w in warns if w))
    if arr.ndim != 2:
        raise ImageReadError(path, f"expected a 2-D image, got shape {arr.shape}")
    if arr.shape[0] < 8 or arr.shape[1] < 8:
        raise ImageReadError(path, f"image too small ({arr.shape[1]}x{arr.shape[0]} px)")
    return np.ascontiguousarray(arr), info


def image_record(info: dict, pixel_size_um: float | None = None) -> dict:
    """What a run's ``images.json`` should record of how an image was read (JSON-ready): the channel
    (``channel``, ``channel_index``, ``channels``) and the pixel size (``pixel_size_um``,
    ``pixel_size_source``). ``pixel_size_um`` given (a user's ``--pixel-size``) replaces the file's;
    a different value in the file is kept as ``pixel_size_um_in_file``. An image turned upright by
    its orientation tag records what was done as ``orientation`` (absent otherwise)."""
    rec = {k: info.get(k) for k in ("channel", "channel_index", "channels", "pixel_size_um", "pixel_size_source")}
    if info.get("orientation_applied"):
        rec["orientation"] = info["orientation_applied"]
    if pixel_size_um is not None:
        given = float(pixel_size_um)
        if rec["pixel_size_um"] is not None and abs(rec["pixel_size_um"] - given) > 1e-6 * given:
            rec["pixel_size_um_in_file"] = rec["pixel_size_um"]
        rec.update(pixel_size_um=given, pixel_size_source="given (--pixel-size)")
    return rec


def describe_read(rec: dict) -> str:
    """One line saying how an image was read, for a report a person reads: the channel, the pixel
    size (and its source) and, where ``rec`` has them (an ``images.json`` entry), the scale rule.
    ``rec``: an :func:`image_record` (or an ``images.json`` image entry)."""
    channels = list(rec.get("channels") or [])
    ch, idx = rec.get("channel"), rec.get("channel_index")
    if ch == "luma":
        parts = [f"{'/'.join(channels) or 'colour'} converted to grey (luma)"]
    elif len(channels) > 1 and idx is not None:
        parts = [f"channel {ch} (index {idx} of {', '.join(channels)})"]
    elif ch is not None:
        parts = ["grey (one channel)" if ch == "grey" else f"channel {ch} (the only one)"]
    else:
        parts = []
    px = rec.get("pixel_size_um")
    if px:
        src = rec.get("pixel_size_source")
        in_file = rec.get("pixel_size_um_in_file")
        parts.append(f"{px:g} \u00b5m per pixel" + (f" ({src}" if src else "")
                     + (f"; the file says {in_file:g}" if in_file else "") + (")" if src else ""))
    else:
        parts.append("pixel size unknown")
    if rec.get("scale_rule"):
        scale = rec.get("scale")
        parts.append(f"scale rule: {rec['scale_rule']}" + (f" (\u00d7{scale:g})" if isinstance(scale, (int, float)) else ""))
    if rec.get("orientation"):
        parts.append(str(rec["orientation"]))
    return "; ".join(parts)


def report_fields(rec: dict) -> dict:
    """What a report row (:mod:`chromoseg.karyotype.report`) shows of how its image was read: ``read``
    (:func:`describe_read`'s line, on the HTML page) and the CSV's ``channel``, ``pixel_size_um``,
    ``pixel_size_source`` and ``scale_rule`` (empty where unknown). ``rec``: an ``images.json`` entry."""
    return {"read": describe_read(rec), "channel": rec.get("channel"), "pixel_size_um": rec.get("pixel_size_um"),
            "pixel_size_source": rec.get("pixel_size_source"), "scale_rule": rec.get("scale_rule")}


def read_image_for_import(path) -> tuple[np.ndarray, dict]:
    """:func:`read_image`'s grey array, and what a dataset importer's COCO image record keeps of how
    the file was read: ``{"pixel_size_um": ...}`` (micrometres per pixel, as
    :func:`read_image_with_info` reads it) where the file records a pixel size, ``{}`` where it does
    not (the record then has no ``pixel_size_um``: unknown)."""
    arr, info = read_image_with_info(path)
    for w in info["warnings"]:
        log.debug("%s: %s", path, w)
    px = info.get("pixel_size_um")
    return arr, ({"pixel_size_um": float(px)} if px else {})


def read_image(path) -> np.ndarray:
    """Read an image as a 2-D grey array, ``uint8`` or ``uint16``.

    Raises :class:`ImageReadError` (naming the file) for a missing, unreadable, empty or odd image.
    Multi-page and multi-channel files give their first page / channel; colour is converted to grey.
    :func:`read_image_with_info` chooses the channel and returns the pixel size and the readers'
    warnings (here only logged, at debug level).
    """
    arr, info = read_image_with_info(path)
    for w in info["warnings"]:
        log.debug("%s: %s", path, w)
    return arr


def read_label_map(path) -> np.ndarray:
    """Read a label map (palette or grey image) as raw integer indices, without palette lookup."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "no such file")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("P", "L", "I;16", "I"):
                raise ImageReadError(path, f"label map has pixel mode {im.mode!r}, expected palette or grey")
            return np.array(im)
    except ImageReadError:
        raise
    except Exception as err:  # noqa: BLE001
        raise ImageReadError(path, f"cannot decode label map ({err})") from err


def bit_depth(arr: np.ndarray) -> int:
    """The bit depth the data of a grey array uses: 8 for uint8; for uint16 the smallest of 8, 12,
    14, 16 bits whose range holds the image's maximum (a 12-bit camera's file is read as 12-bit; a
    16-bit image whose brightest pixel is under 4096 is read as 12-bit too, i.e. brightened)."""
    if arr.dtype == np.uint8:
        return 8
    m = int(arr.max()) if arr.size else 0
    return next(b for b in BIT_DEPTHS if m < 2 ** b)


def to_float01(arr: np.ndarray) -> np.ndarray:
    """Scale a uint8/uint16 grey array into float32 [0, 1] by the range of its real bit depth
    (:func:`bit_depth`): 8-bit / 255, 12-bit data in a 16-bit file / 4095, full 16-bit / 65535."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / float(2 ** bit_depth(arr) - 1)
    if arr.dtype.kind == "f":
        return np.clip(arr.astype(np.float32), 0.0, 1.0)
    raise TypeError(f"unsupported image dtype {arr.dtype}")


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """A displayable 8-bit copy of a grey image (16-bit data is stretched to its 0.5-99.5 percentiles)."""
    if arr.dtype == np.uint8:
        return arr
    a = arr.astype(np.float32)
    lo, hi = np.percentile(a, [0.5, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((a - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def list_images(inputs) -> list[Path]:
    """Expand files, folders and glob patterns into a sorted list of image paths."""
    import glob

    out: list[Path] = []
    for item in [inputs] if isinstance(inputs, (str, Path)) else inputs:
        p = Path(item)
        if p.is_dir():
            # broken links are kept, so that the reader reports them instead of losing them silently
            out.extend(q for q in sorted(p.rglob("*"))
                       if q.suffix.lower() in IMAGE_SUFFIXES and (q.is_file() or (q.is_symlink() and not q.exists())))
        elif any(ch in str(item) for ch in "*?["):
            out.extend(Path(q) for q in sorted(glob.glob(str(item), recursive=True)) if Path(q).suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(p)
    seen, unique = set(), []
    for p in out:
        if p not in seen:
            seen.add(p)
            unique.append(p)
    return unique
