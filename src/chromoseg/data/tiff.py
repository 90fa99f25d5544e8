"""TIFF files as labs write them, read through tifffile (with imagecodecs).

What this module does for :func:`chromoseg.data.io.read_image_with_info`:

- picks the plane to read (the channel rule, :func:`select_channel`) and reads only that plane's page
  where the file's layout allows it;
- checks the strip / tile tags of that page against the file's length **before** decoding: a
  strip or tile the image needs that ends beyond the end of the file makes the file *truncated*
  (and nothing else does); strips listed beyond those the image needs (a second strip that is not
  there, as some labs' writers list it) are ignored with a warning, as tifffile does;
- turns the plane into the grey ``uint8`` / ``uint16`` array the models read (luma for colour,
  as Pillow's ``convert("L")``, so files Pillow used to read give the same pixels);
- reads the pixel size in micrometres (:func:`pixel_size_from_tiff`).

tifffile reports what it had to work around through the ``tifffile`` logger; those messages are
captured (:func:`capture_reader_warnings`) and returned with the image instead of printed.
"""
from __future__ import annotations

import logging
import math
import re
import struct
import threading
import warnings
from contextlib import contextmanager
from functools import lru_cache
from itertools import zip_longest
from pathlib import Path

import numpy as np

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
#: the largest plane read (Pillow's own refusal limit, twice its decompression-bomb warning)
MAX_READ_PIXELS = 2 * 89_478_485
#: a pixel larger than this (in um) cannot be a microscope's sampling of a metaphase: TIFF / PNG /
#: JPEG resolutions that give one are the dpi image programs write by default (72, 96, 300, 600 dpi)
MAX_PLAUSIBLE_PIXEL_UM = 10.0
#: micrometres per unit of OME ``PhysicalSizeXUnit`` and ImageJ ``unit=``
LENGTH_UNITS_UM = {
    "m": 1e6, "dm": 1e5, "cm": 1e4, "mm": 1e3, "\u00b5m": 1.0, "\u03bcm": 1.0, "um": 1.0, "micron": 1.0,
    "microns": 1.0, "micrometer": 1.0, "micrometre": 1.0, "nm": 1e-3, "pm": 1e-6, "\u00c5": 1e-4, "\u212b": 1e-4,
    "in": 25400.0, "inch": 25400.0,
}
#: names a colour sample answers to (case-insensitive), beside its letter
COLOUR_ALIASES = {"R": ("red",), "G": ("green",), "B": ("blue",), "C": ("cyan",), "M": ("magenta",),
                  "Y": ("yellow",), "K": ("black", "key")}
GREY_WORDS = ("grey", "gray", "luma", "l")


class ReadProblem(Exception):
    """A file this module refuses; ``problem`` is the one-line reason (the caller names the file)."""

    def __init__(self, problem: str):
        super().__init__(problem)
        self.problem = problem


def one_line(text, limit: int = 300) -> str:
    """A library's message as one line, at most ``limit`` characters."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def is_tiff(path) -> bool:
    """A TIFF by its first bytes (also one cut inside its 4-byte signature)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head in TIFF_MAGIC or (0 < len(head) < 4 and any(m.startswith(head) for m in TIFF_MAGIC))


# --------------------------------------------------------------------------------------------------
# warnings of the readers


class _ThreadCapture(logging.Filter):
    """Takes the records of the current thread (returned with the image) and drops them there."""

    def __init__(self, into: list[str]):
        super().__init__()
        self.into = into
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self.thread:
            return True
        self.into.append(clean_reader_message(record.getMessage()))
        return False


def clean_reader_message(msg: str) -> str:
    """A reader's message as one readable line: ``<tifffile.TiffPage 0 @8> incorrect StripOffsets
    count (2 != 1)`` -> ``tifffile: page 0: incorrect StripOffsets count (2 != 1)``."""
    msg = one_line(msg)
    from_tifffile = "tifffile" in msg or msg.startswith("<Tiff")
    msg = re.sub(r"^<tifffile\.Tiff(\w+) (\d+) @\d+> ", lambda m: f"{m.group(1).lower()} {m.group(2)}: ", msg)
    msg = re.sub(r"<tifffile\.Tiff(\w+) (\d+) @\d+>", lambda m: f"{m.group(1).lower()} {m.group(2)}", msg)
    msg = re.sub(r"^<Tiff(\w+)\.(\w+)> raised ", lambda m: f"{m.group(1).lower()}.{m.group(2)}: ", msg)
    msg = re.sub(r"^<tifffile\.TiffFile '[^']*'> ", "", msg)  # the file: the caller names it
    if re.match(r"^OME series raised ", msg):  # broken OME-XML: tifffile reads the pages as a plain TIFF
        msg += ": the OME metadata was not used (its channel names and pixel size were not read)"
    return f"tifffile: {msg}" if from_tifffile and not msg.startswith("tifffile") else msg


@contextmanager
def capture_reader_warnings():
    """Collect what tifffile logs and what Python warnings the readers raise, as one-line strings."""
    messages: list[str] = []
    flt = _ThreadCapture(messages)
    lg = logging.getLogger("tifffile")
    lg.addFilter(flt)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield messages
            finally:
                for w in caught:
                    messages.append(clean_reader_message(f"{w.category.__name__}: {w.message}"))
    finally:
        lg.removeFilter(flt)


# --------------------------------------------------------------------------------------------------
# the channel rule


def channel_aliases(label: str) -> tuple[str, ...]:
    return (label,) + COLOUR_ALIASES.get(label, ())


def select_channel(request, labels: list[str], *, colour: bool, named: bool,
                   aliases: list[list[str]] | None = None) -> tuple[int | None, str, list[str]]:
    """Which of ``labels`` (the channels or planes of a file) ``request`` means.

    Returns ``(index, rule, warnings)``; ``index`` None means "convert the colour samples to grey
    (luma)". ``colour``: the labels are colour samples (R, G, B ...); ``named``: the labels are names
    from the file (OME / ImageJ), not made up; ``aliases``: per label, every name it answers to (an
    OME channel's ``Name`` and ``Fluor``; default: the label, and red / green / blue ... for a colour
    letter). Names match case-insensitively. Raises :class:`ReadProblem` when nothing matches.
    """
    n = len(labels)
    listing = ", ".join(labels) + (" (or grey: luma)" if colour else "")
    if request is None:
        if colour:
            return None, f"default: {'/'.join(labels)} converted to grey (ITU-R 601 luma)", []
        if n > 1:
            return 0, f"default: the first of {n} channels", [
                f"the file holds {n} channels or planes ({', '.join(labels)}): the first, {labels[0]!r}, was read "
                "(predict --channel, or channel= in Python, chooses another)"]
        return 0, "the only channel", []
    if isinstance(request, (bool, np.bool_)) or not isinstance(request, (int, np.integer, str)):
        raise TypeError(f"channel must be a name or a 0-based index, not {request!r}")
    if isinstance(request, (int, np.integer)):
        k = int(request)
        if not 0 <= k < n:
            raise ReadProblem(f"no channel {k}: the file has {n} ({listing}; indices from 0)")
        return k, f"channel={k}: {labels[k]!r}", []
    want = request.strip().casefold()
    if colour and want in GREY_WORDS:
        return None, f"channel={request!r}: {'/'.join(labels)} converted to grey (ITU-R 601 luma)", []
    names = aliases if aliases is not None and len(aliases) == n else [channel_aliases(lab) for lab in labels]
    hits = [i for i, lab in enumerate(labels) if want in {a.casefold() for a in (lab, *names[i])}]
    if len(hits) > 1:
        raise ReadProblem(f"channel {request!r} is ambiguous: {len(hits)} channels have that name ({listing})")
    if hits:
        return hits[0], f"channel={request!r}: matched {labels[hits[0]]!r}", []
    if want.isdigit():
        return select_channel(int(want), labels, colour=colour, named=named, aliases=aliases)
    if n == 1 and not named and not colour:
        if want in GREY_WORDS:
            return 0, f"channel={request!r}: the only channel", []
        return 0, f"channel={request!r}: the only (unnamed) channel", [
            f"channel {request!r} asked for: the file has one unnamed grey channel, which was read"]
    raise ReadProblem(f"no channel named {request!r}: the file has {listing}")


# --------------------------------------------------------------------------------------------------
# pixel size


def _um_per_unit(unit) -> float | None:
    if unit is None:
        return None
    u = str(unit).strip().replace("\\u00B5", "\u00b5").replace("\\u00b5", "\u00b5")
    return LENGTH_UNITS_UM.get(u, LENGTH_UNITS_UM.get(u.lower()))


def _rational(value) -> float | None:
    try:
        if isinstance(value, (tuple, list)):
            num, den = value[:2]
            return float(num) / float(den) if float(den) else None
        return float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def pixel_size_from_resolution(xres, unit_code, yres=None, what: str = "TIFF") -> tuple[float | None, str | None, str | None, list[str]]:
    """The TIFF resolution rule: ``XResolution`` pixels per ``ResolutionUnit`` (2 inch, 3 centimetre).

    Returns ``(pixel_size_um, source, note, warnings)``: None with a ``note`` saying why when the tags
    are absent, the unit is absent or none (1), or the size is implausible for a microscope (a
    pixel over :data:`MAX_PLAUSIBLE_PIXEL_UM`: 72 dpi and the like, written by image programs).
    """
    ppu = _rational(xres)
    if ppu is None or not math.isfinite(ppu) or ppu <= 0:
        return None, None, f"no {what} resolution tags", []
    if unit_code is None:
        return None, None, f"{what} XResolution {ppu:g} without ResolutionUnit: no physical scale", []
    unit_code = int(unit_code)
    if unit_code not in (2, 3):
        return None, None, f"{what} ResolutionUnit is none: no physical scale", []
    name = "inch" if unit_code == 2 else "centimetre"
    um = (25400.0 if unit_code == 2 else 10000.0) / ppu
    if um > MAX_PLAUSIBLE_PIXEL_UM:
        return None, None, (f"{what} resolution {ppu:g} pixels per {name} ({um:.4g} um per pixel) is an image program's "
                            "default, not a microscope's sampling"), []
    warns = []
    ppy = _rational(yres)
    if ppy and abs(ppy - ppu) > 0.01 * ppu:
        warns.append(f"pixels are not square: {um:.4g} um wide, {(um * ppu / ppy):.4g} um high; the width is used")
    return _round(um), f"{what} XResolution {ppu:g} pixels per {name}", None, warns


def _ome_pixels(xml: str):
    """The first ``Image``'s ``Pixels`` element of an OME-XML document (namespace-agnostic)."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == "Pixels":
            return el
    return None


def ome_channel_names(pixels) -> list[list[str]]:
    """Per OME ``Channel``: the names it answers to (``Name``, then ``Fluor``)."""
    out = []
    for el in pixels:
        if el.tag.rsplit("}", 1)[-1] == "Channel":
            out.append([v for v in (el.get("Name"), el.get("Fluor")) if v and v.strip()])
    return out


def pixel_size_from_tiff(tif, page) -> tuple[float | None, str | None, str | None, list[str]]:
    """Pixel size in um of a TIFF: OME ``PhysicalSizeX`` (+ ``PhysicalSizeXUnit``, default um), else
    ImageJ's ``unit=`` with ``XResolution``, else the TIFF resolution rule
    (:func:`pixel_size_from_resolution`). Returns ``(um, source, note, warnings)``."""
    notes = []
    if tif.is_ome:
        pixels = _ome_pixels(tif.ome_metadata or "")
        if pixels is not None and pixels.get("PhysicalSizeX"):
            x = _rational(pixels.get("PhysicalSizeX"))
            unit = pixels.get("PhysicalSizeXUnit") or "\u00b5m"
            per = _um_per_unit(unit)
            if x and x > 0 and math.isfinite(x) and per:
                um = x * per
                warns = []
                y = _rational(pixels.get("PhysicalSizeY"))
                yper = _um_per_unit(pixels.get("PhysicalSizeYUnit") or "\u00b5m")
                if y and yper and abs(y * yper - um) > 0.01 * um:
                    warns.append(f"pixels are not square: {um:.4g} um wide, {y * yper:.4g} um high; the width is used")
                return _round(um), f"OME PhysicalSizeX {x:g} {unit}", None, warns
            notes.append(f"OME PhysicalSizeX {pixels.get('PhysicalSizeX')!r} {unit!r} is not a length")
        else:
            notes.append("no OME PhysicalSizeX")
    tags = page.tags
    xres = tags.get(282)
    if tif.is_imagej:
        md = tif.imagej_metadata or {}
        unit = md.get("unit")
        per = _um_per_unit(unit)
        ppu = _rational(xres.value) if xres is not None else None
        if per and ppu and ppu > 0:
            return _round(per / ppu), f"ImageJ unit {unit} with XResolution {ppu:g}", None, []
        notes.append("ImageJ file without a length unit" if not per else "ImageJ file without XResolution")
    unit = tags.get(296)
    yres = tags.get(283)
    um, source, note, warns = pixel_size_from_resolution(xres.value if xres is not None else None,
                                                         unit.value if unit is not None else None,
                                                         yres.value if yres is not None else None)
    if um is None:
        notes.append(note)
    return um, source, ("; ".join(n for n in notes if n) or None) if um is None else None, warns


def pixel_size_from_pillow(im) -> tuple[float | None, str | None, str | None, list[str]]:
    """Pixel size of a PNG (``pHYs`` in pixels per metre), JPEG (JFIF density in inch or cm, or EXIF)
    or BMP (pixels per metre), as Pillow reports it (``info["dpi"]``), by the same plausibility rule;
    a TIFF read by Pillow goes by its tags."""
    if getattr(im, "tag_v2", None) is not None:
        t = im.tag_v2
        return pixel_size_from_resolution(t.get(282), t.get(296), t.get(283))
    dpi = im.info.get("dpi")
    if not dpi:
        return None, None, f"no {im.format} resolution", []
    try:
        dx, dy = (float(dpi[0]), float(dpi[1])) if isinstance(dpi, (tuple, list)) else (float(dpi), float(dpi))
    except (TypeError, ValueError, IndexError):
        return None, None, f"unreadable {im.format} resolution {dpi!r}", []
    if not dx > 0:
        return None, None, f"no {im.format} resolution", []
    um = 25400.0 / dx
    if um > MAX_PLAUSIBLE_PIXEL_UM:
        return None, None, (f"{im.format} resolution {dx:g} dpi ({um:.4g} um per pixel) is an image program's default, "
                            "not a microscope's sampling"), []
    warns = []
    if dy > 0 and abs(dy - dx) > 0.01 * dx:
        warns.append(f"pixels are not square: {um:.4g} um wide, {25400.0 / dy:.4g} um high; the width is used")
    return _round(um), f"{im.format} resolution {dx:g} dpi", None, warns


# --------------------------------------------------------------------------------------------------
# strips and tiles against the file's length


def _raw_tag(page, code: int):
    tags = getattr(page, "tags", None)
    if tags is None:
        return None
    tag = tags.get(code)
    if tag is None:
        return None
    v = tag.value
    return tuple(int(x) for x in v) if isinstance(v, (tuple, list, np.ndarray)) else (int(v),)


def check_segments(page, file_size: int) -> tuple[str | None, list[str]]:
    """``(problem, warnings)`` for the strips or tiles of ``page`` (a TiffPage or TiffFrame).

    ``problem``: a segment the image needs lies (partly) beyond the end of the file -- the file is
    truncated -- or has no data at all. ``warnings``: segments listed beyond those the image needs
    (ignored, as tifffile ignores them), or fewer listed than it needs.
    """
    kf = getattr(page, "keyframe", None) or page
    tiled = bool(kf.is_tiled)
    word = "tile" if tiled else "strip"
    offsets = _raw_tag(page, 324 if tiled else 273) or tuple(int(x) for x in page.dataoffsets)
    counts = _raw_tag(page, 325 if tiled else 279) or tuple(int(x) for x in page.databytecounts)
    needed = int(np.prod(kf.chunked)) if kf.chunked else len(offsets)
    warns: list[str] = []
    compressed = int(kf.compression) != 1
    planar = int(kf.planarconfig) == 2
    spp = int(kf.samplesperpixel)
    spp_c = 1 if planar else spp
    bps = int(kf.bitspersample)
    h, w = int(kf.imagelength), int(kf.imagewidth)
    if tiled:
        th, tw, td = int(kf.tilelength), int(kf.tilewidth), int(kf.tiledepth or 1)
        seg_bytes = [td * th * math.ceil(tw * spp_c * bps / 8)] * needed
        geometry = f"{w}x{h} px in {tw}x{th} tiles"

        def where(i):
            return f"{word} {i + 1} of {needed}"
    else:
        rps = min(int(kf.rowsperstrip or h), h) or h
        per_plane = math.ceil(h / rps)
        row_bytes = math.ceil(w * spp_c * bps / 8)
        seg_bytes = [min(rps, h - (i % per_plane) * rps) * row_bytes for i in range(needed)]
        geometry = f"{h} rows, RowsPerStrip {kf.rowsperstrip}"

        def where(i):
            r0 = (i % per_plane) * rps
            plane = f", sample plane {i // per_plane}" if planar and spp > 1 else ""
            return f"{word} {i + 1} of {needed} (rows {r0}-{min(r0 + rps, h) - 1}{plane})"
    if len(offsets) > needed:
        extra = list(zip_longest(offsets[needed:], counts[needed:len(offsets)], fillvalue=0))
        beyond = [o for o, c in extra if o + c > file_size]
        if len(extra) == 1:
            o, c = extra[0]
            what = (f"the extra {word} (at byte {o}, {c} bytes"
                    f"{f', beyond the end of the file at byte {file_size}' if beyond else ''}) was ignored")
        else:
            what = (f"the {len(extra)} extra {word}s ({len(beyond)} of them beyond the end of the file at byte "
                    f"{file_size}) were ignored")
        warns.append(f"the {word} tags list {len(offsets)} {word}s but the image ({geometry}) needs {needed}: {what}")
    elif len(offsets) < needed:
        warns.append(f"the {word} tags list {len(offsets)} {word}s but the image needs {needed}")
        if not compressed and offsets:  # tifffile reads such data as one contiguous block
            end = offsets[0] + sum(seg_bytes)
            if end > file_size:
                return (f"file is truncated: it ends at byte {file_size} but its image data, from byte {offsets[0]}, "
                        f"runs to byte {end} (an interrupted copy or download?)"), warns
        return None, warns
    for i in range(min(needed, len(offsets))):
        off, cnt = offsets[i], (counts[i] if i < len(counts) else 0)
        if off == 0 or (compressed and cnt == 0):
            return (f"image data missing: {where(i)} has no data in the file (StripOffsets/TileOffsets {off}, "
                    f"{cnt} bytes)"), warns
        if not compressed and off + cnt <= file_size < off + seg_bytes[i]:
            return (f"image data shorter than its size says: {where(i)} holds {cnt} bytes but its "
                    f"{w}-pixel rows need {seg_bytes[i]} (its size and strip tags disagree)"), warns
        end = off + (seg_bytes[i] if not compressed else cnt)
        if end > file_size:
            return (f"file is truncated: it ends at byte {file_size} but {where(i)} runs from byte {off} to byte {end} "
                    "(an interrupted copy or download?)"), warns
    return None, warns


def header_problem(path: Path, file_size: int) -> str | None:
    """Why a TIFF that tifffile cannot open is unusable, when the reason is that the file ends too
    soon (or, for a tag value wholly beyond its end, may be corrupt)."""
    fatal, values = scan_first_ifd(path, file_size)
    return fatal or (values[0] if values else None)


def scan_first_ifd(path: Path, file_size: int) -> tuple[str | None, list[str]]:
    """``(problem, value_problems)`` of the header and first image directory against the file's length.

    ``problem``: the file ends inside its header or first directory, or the header points beyond its
    end (how a file whose directory follows its data -- libtiff's order -- looks when cut).
    ``value_problems``: tag values (metadata, strip tables) the file ends inside of ("truncated") or
    that lie wholly beyond its end ("truncated or corrupt").
    """
    with open(path, "rb") as f:
        head = f.read(16)
        if len(head) < 8:
            return f"file is truncated: it ends at byte {file_size}, inside its TIFF header", []
        bo = "<" if head[:2] == b"II" else ">"
        big = struct.unpack(bo + "H", head[2:4])[0] == 43
        if big:
            if len(head) < 16:
                return f"file is truncated: it ends at byte {file_size}, inside its BigTIFF header", []
            ifd = struct.unpack(bo + "Q", head[8:16])[0]
        else:
            ifd = struct.unpack(bo + "I", head[4:8])[0]
        if ifd >= file_size:
            return (f"file is truncated: its header points to its first image directory at byte {ifd}, beyond its "
                    f"end at byte {file_size}"), []
        f.seek(ifd)
        raw = f.read(8 if big else 2)
        if len(raw) < (8 if big else 2):
            return f"file is truncated: it ends at byte {file_size}, inside its first image directory", []
        n = struct.unpack(bo + ("Q" if big else "H"), raw)[0]
        if not 0 < n <= 1000:  # a corrupt directory, not a cut one
            return None, []
        entry = 20 if big else 12
        end = ifd + (8 if big else 2) + n * entry
        if end > file_size:
            return (f"file is truncated: its first image directory ({n} entries from byte {ifd}) runs to byte {end}, "
                    f"beyond its end at byte {file_size}"), []
        entries = f.read(n * entry)
    values = []
    if end + (8 if big else 4) > file_size:
        values.append(f"file is truncated: it ends at byte {file_size}, inside the pointer to its next image directory")
    known = _known_tags()
    for i in range(n):
        e = entries[i * entry:(i + 1) * entry]
        code, typ = struct.unpack(bo + "HH", e[:4])
        count = struct.unpack(bo + ("Q" if big else "I"), e[4:12] if big else e[4:8])[0]
        nbytes = count * TYPE_SIZES.get(typ, 0)
        if nbytes <= (8 if big else 4) or nbytes > 2 ** 26:
            continue
        if code in SCALAR_TAGS or (known and code not in known):  # a corrupt entry: the decoder's to judge
            continue
        where = struct.unpack(bo + ("Q" if big else "I"), e[12:20] if big else e[8:12])[0]
        if where + nbytes <= file_size:
            continue
        if where < file_size:  # the file ends inside it
            values.append(f"file is truncated: the value of its tag {code} ({_tag_name(code)}) runs from byte {where} "
                          f"to byte {where + nbytes}, beyond its end at byte {file_size}")
        else:
            values.append(f"file is truncated or corrupt: its tag {code} ({_tag_name(code)}) points to bytes "
                          f"{where}-{where + nbytes}, beyond its end at byte {file_size}")
    return None, values


#: tags that hold one value (a count > 1 is corruption, not a value the file was cut inside of)
SCALAR_TAGS = frozenset({254, 255, 256, 257, 259, 262, 263, 266, 274, 277, 278, 284, 290, 296, 317, 322, 323, 338})


@lru_cache(maxsize=1)
def _known_tags() -> frozenset:
    try:
        import tifffile

        return frozenset(int(k) for k, _ in tifffile.TIFF.TAGS.items() if isinstance(k, int))
    except Exception:  # noqa: BLE001
        return frozenset()


TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}


def _tag_name(code: int) -> str:
    try:
        import tifffile

        return str(tifffile.TIFF.TAGS.get(code, "unknown"))
    except Exception:  # noqa: BLE001
        return "unknown"


# --------------------------------------------------------------------------------------------------
# one plane of the first series, and what its channels are


def _labels_for(tif, series, axes: str, shape: tuple, ch: int | None) -> tuple[list[str], bool]:
    """Labels of the channel axis at position ``ch`` and whether they are the file's own names."""
    if ch is None:  # one channel: its OME name, if it has one
        names = _ome_aliases(tif, series, 1)
        return ([names[0][0]], True) if names and names[0] else (["grey"], False)
    n = shape[ch]
    if axes[ch] == "C":
        if tif.is_ome and series.kind == "ome":
            pixels = _ome_pixels(tif.ome_metadata or "")
            names = ome_channel_names(pixels) if pixels is not None else []
            if len(names) == n and all(names):
                return [nm[0] for nm in names], True
        if tif.is_imagej:
            labels = (tif.imagej_metadata or {}).get("Labels")
            if isinstance(labels, (list, tuple)) and len(labels) == n and all(isinstance(x, str) and x.strip() for x in labels):
                return [x.strip() for x in labels], True
        return [f"channel {i}" for i in range(n)], False
    return [f"plane {i}" for i in range(n)], False


def _ome_aliases(tif, series, n: int) -> list[list[str]] | None:
    if not (tif.is_ome and series.kind == "ome"):
        return None
    pixels = _ome_pixels(tif.ome_metadata or "")
    names = ome_channel_names(pixels) if pixels is not None else []
    return names if len(names) == n else None


def read_tiff(path: Path, channel=None) -> tuple[np.ndarray, dict]:
    """Read the plane of a TIFF the channel rule picks, as a grey uint8 / uint16 array, with its info.

    Raises :class:`ReadProblem` for a file that is truncated, has missing data or names no such
    channel; other exceptions (tifffile's) propagate, for the caller to try Pillow.
    """
    import tifffile

    size = path.stat().st_size
    info: dict = {"reader": "tifffile", "warnings": []}
    try:
        tif = tifffile.TiffFile(str(path))
    except Exception as err:  # noqa: BLE001 - a structural cut is the real reason, if there is one
        problem = header_problem(path, size)
        if problem:
            raise ReadProblem(problem) from err
        raise
    try:
        return _read_open_tiff(tif, path, size, channel, info)
    except ReadProblem:
        raise
    except Exception as err:  # noqa: BLE001 - a structural cut is the real reason, if there is one
        problem = header_problem(path, size)
        if problem:
            raise ReadProblem(problem) from err
        raise


def _read_open_tiff(tif, path: Path, size: int, channel, info: dict) -> tuple[np.ndarray, dict]:
    with tif:
        if not tif.pages or not tif.series:
            raise ReadProblem(header_problem(path, size) or "the TIFF holds no image")
        s = tif.series[0]
        kf = s.keyframe
        kind = "OME-TIFF" if tif.is_ome and s.kind == "ome" else "ImageJ TIFF" if tif.is_imagej else "TIFF"
        axes, shape = s.axes, tuple(int(x) for x in s.shape)
        info.update(format=kind + (" (BigTIFF)" if tif.is_bigtiff else ""), compression=kf.compression.name,
                    photometric=kf.photometric.name, bits_per_sample=int(kf.bitspersample), axes=axes,
                    shape=list(shape), dtype=str(s.dtype))
        if len(tif.series) > 1:
            info["warnings"].append(f"the file holds {len(tif.series)} images (series): the first, "
                                    f"{'x'.join(str(x) for x in shape)} ({axes}), was read")
        photometric = int(kf.photometric)
        if photometric == 6 and int(kf.compression) not in (6, 7, 34892):  # YCbCr not in JPEG: Pillow's job
            raise ValueError(f"YCbCr pixels with {kf.compression.name} compression")
        n_s = shape[axes.index("S")] if "S" in axes else 1
        extras = tuple(int(e) for e in (kf.extrasamples or ()))
        colour = None
        if photometric == 3:
            colour = "palette"
        elif "S" in axes:
            if photometric in (2, 6):  # RGB, YCbCr (JPEG, decoded to RGB)
                colour = "rgb"
            elif photometric == 5 and int(getattr(kf, "inkset", 1) or 1) == 1 and n_s >= 4:
                colour = "cmyk"
            elif photometric in (0, 1) and extras and all(e in (1, 2) for e in extras) and n_s == len(extras) + 1:
                colour = "alpha"  # grey + alpha: the alpha is dropped, as Pillow's convert("L") does
            elif photometric not in (0, 1, 5, 32803, 34892):
                raise ValueError(f"{kf.photometric.name} photometric with {n_s} samples")
        samples_are_colour = colour in ("rgb", "cmyk", "alpha")
        free = [i for i, a in enumerate(axes) if a not in "YX" and not (a == "S" and samples_are_colour)]
        ch = axes.index("C") if "C" in axes else (free[-1] if free else None)
        band = None  # the colour sample chosen (None: luma)
        if ch is None and colour in ("rgb", "cmyk", "palette"):
            labels = (["R", "G", "B"] if colour != "cmyk" else ["C", "M", "Y", "K"])[: (3 if colour == "palette" else n_s)]
            band, rule, warns = select_channel(channel, labels, colour=True, named=False)
            info.update(channels=labels, channel_index=band, channel="luma" if band is None else labels[band])
            plane_index = None
        else:
            labels, named = _labels_for(tif, s, axes, shape, ch)
            aliases = _ome_aliases(tif, s, shape[ch] if ch is not None else 1)
            plane_index, rule, warns = select_channel(channel, labels, colour=False, named=named, aliases=aliases)
            if colour in ("rgb", "cmyk", "palette"):
                rule += "; its colour converted to grey (ITU-R 601 luma)"
            info.update(channels=labels, channel_index=plane_index, channel=labels[plane_index])
        info["channel_rule"] = rule
        info["warnings"].extend(warns)

        sel = {}  # the index along every axis but Y, X and colour samples
        for i, a in enumerate(axes):
            if a in "YX" or (a == "S" and samples_are_colour):
                continue
            sel[i] = plane_index if i == ch else 0
            if i != ch and shape[i] > 1:
                info["warnings"].append(f"the file holds {shape[i]} planes along its {a} axis: the first was read")
        h, w = shape[axes.index("Y")], shape[axes.index("X")]
        if h * w > MAX_READ_PIXELS:
            raise ReadProblem(f"image too large to read ({w}x{h} px, {h * w / 1e6:.0f} MP)")
        deferred, pages = _plan_read(s, axes, shape, sel)
        for page in pages:  # before decoding: is everything the plane needs in the file?
            problem, warns = check_segments(page, size)
            info["warnings"].extend(warns)
            if problem:
                raise ReadProblem(problem)
        plane, rest = _decode(*deferred)
        _, values = scan_first_ifd(path, size)  # the pixels are all there: is some metadata cut off?
        info["warnings"].extend(v + (" (that tag was not read)" if " tag " in v else "") for v in values
                                if not any(t in v for t in ("StripOffsets", "StripByteCounts", "TileOffsets", "TileByteCounts")))
        px, source, note, warns = pixel_size_from_tiff(tif, kf)
        info["warnings"].extend(warns)
        info.update(pixel_size_um=px, pixel_size_source=source, pixel_size_note=note)
        orientation = _raw_tag(kf, 274)  # Orientation: the caller turns the image upright by it
        info["orientation"] = orientation[0] if orientation else None
        grey = to_grey(plane, rest, colour, band, kf)
    return grey, info


def _plan_read(s, axes: str, shape: tuple, sel: dict):
    """How to read the selected plane: ``((what, its axes, index per axis), pages it reads)``.

    One page where the series' pages map onto its leading dimensions (OME, ImageJ, multi-page
    files); else the whole series (refused over 2 GiB)."""
    full_axes, full_shape = s.get_axes(False), tuple(int(x) for x in s.get_shape(False))
    kept = [i for i, (a, n) in enumerate(zip(full_axes, full_shape)) if n > 1 or a in "YX"]
    n_pages = len(s)
    page_elems = int(np.prod(s.keyframe.shape))
    if "".join(full_axes[i] for i in kept) == axes and tuple(full_shape[i] for i in kept) == shape:
        sel_full = {kept[i]: v for i, v in sel.items()}
        k = next((k for k in range(len(full_shape) + 1) if int(np.prod(full_shape[:k])) == n_pages
                  and int(np.prod(full_shape[k:])) == page_elems), None)
        if k is not None:
            lead = tuple(sel_full.get(i, 0) for i in range(k))
            flat = int(np.ravel_multi_index(lead, full_shape[:k])) if k else 0
            page = s[flat]
            if page is None:
                raise ReadProblem(f"plane {flat} of the image is missing from the file")
            tail = [i for i in range(k, len(full_shape)) if full_shape[i] > 1 or full_axes[i] in "YX"]
            if tuple(int(x) for x in page.shape) == tuple(full_shape[i] for i in tail):
                tail_axes = "".join(full_axes[i] for i in tail)
                tail_sel = {j: sel_full[i] for j, i in enumerate(tail) if i in sel_full}
                return (page, tail_axes, tail_sel), [page]
    nbytes = int(np.prod(shape)) * s.dtype.itemsize
    if nbytes > 2 ** 31:
        raise ReadProblem(f"image series too large to read at once ({nbytes / 2 ** 30:.1f} GiB)")
    pages = [p for p in (s[i] for i in range(n_pages)) if p is not None]
    return (s, axes, dict(sel)), pages


def _decode(obj, axes: str, sel: dict) -> tuple[np.ndarray, str]:
    """Read and index: the plane and the axes left (Y, X and maybe colour samples S)."""
    arr = obj.asarray()
    if arr.ndim != len(axes):
        raise ValueError(f"tifffile returned shape {arr.shape} for axes {axes}")
    arr = arr[tuple(sel.get(i, slice(None)) for i in range(len(axes)))]
    return arr, "".join(a for i, a in enumerate(axes) if i not in sel)


def to_grey(plane: np.ndarray, axes: str, colour, band, kf) -> np.ndarray:
    """The selected plane as grey uint8 / uint16: colour to luma (or its ``band``), bilevel to 0/255,
    2- and 4-bit grey stretched to 8 bits, 1-8 bit MINISWHITE inverted (all as Pillow reads them,
    so files Pillow used to read give the same pixels), float stretched to 16 bits."""
    from PIL import Image

    from chromoseg.data.io import float_to_uint16, to_uint16

    arr = np.asarray(plane)
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    photometric, bps = int(kf.photometric), int(kf.bitspersample)
    if colour == "palette":  # Pillow's palette: the 16-bit colormap // 256
        cmap = np.asarray(kf.colormap)
        cmap8 = cmap if cmap.dtype == np.uint8 else (cmap.astype(np.uint32) // 256).astype(np.uint8)
        if band is not None:
            lut = np.ascontiguousarray(cmap8[band])
        else:  # each palette colour's luma: the same as converting every pixel, in a look-up table
            lut = np.array(Image.fromarray(np.ascontiguousarray(cmap8.T[None]), "RGB").convert("L"))[0]
        if arr.size and int(arr.max()) >= lut.size:
            arr = np.minimum(arr, lut.size - 1)
        return lut[arr]
    if "S" in axes:
        arr = np.moveaxis(arr, axes.index("S"), -1)
        if colour == "alpha":
            arr = arr[..., 0]
        elif band is not None:
            arr = arr[..., band]
        elif colour == "cmyk":
            arr = _cmyk_luma(arr)
        else:
            arr = _rgb_luma(arr)
    if arr.ndim != 2:
        raise ReadProblem(f"expected a 2-D image, got shape {arr.shape}")
    if arr.dtype == bool:  # bilevel: 0/255 as Pillow's convert("L"); MINISWHITE: 0 is white
        arr = np.where(arr, 255, 0).astype(np.uint8)
        return 255 - arr if photometric == 0 else arr
    grey_file = colour in (None, "alpha") and photometric in (0, 1)
    if arr.dtype == np.uint8 and grey_file and bps in (2, 4):
        arr = (arr.astype(np.uint16) * 255 // (2 ** bps - 1)).astype(np.uint8)  # as Pillow's L;2 / L;4
    if arr.dtype == np.uint8 and grey_file and photometric == 0:
        arr = 255 - arr  # MINISWHITE up to 8 bits, as Pillow reads it (16-bit and float: as stored)
    if arr.dtype.kind == "f":
        return float_to_uint16(arr)
    return to_uint16(arr)


def _rgb_luma(rgb: np.ndarray) -> np.ndarray:
    from PIL import Image

    from chromoseg.data.io import float_to_uint16

    if rgb.dtype == np.uint8:  # exactly Pillow's convert("L"), as before
        return np.array(Image.fromarray(np.ascontiguousarray(rgb[..., :3]), "RGB").convert("L"))
    grey = rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    if rgb.dtype.kind == "f":
        return float_to_uint16(grey)
    if rgb.dtype == np.uint16:  # as before: rounded, 16-bit
        return np.clip(np.rint(grey), 0, 65535).astype(np.uint16)
    return np.rint(grey).astype(np.int64)  # other integers: to_uint16 checks the range


def _cmyk_luma(cmyk: np.ndarray) -> np.ndarray:
    from PIL import Image

    if cmyk.dtype == np.uint8:
        return np.array(Image.fromarray(np.ascontiguousarray(cmyk[..., :4]), "CMYK").convert("L"))
    top = float(np.iinfo(cmyk.dtype).max) if cmyk.dtype.kind in "ui" else 1.0
    c = np.clip(cmyk[..., :4].astype(np.float64) / top, 0, 1)
    rgb = (1 - c[..., :3]) * (1 - c[..., 3:4]) * top
    return _rgb_luma(rgb.astype(cmyk.dtype) if cmyk.dtype.kind in "ui" else rgb)
