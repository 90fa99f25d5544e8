"""Reading microscope images into grey arrays.

Supported: 8/16-bit grey, palette or RGB TIFF (LZW too), PNG, JPEG, BMP. The model's input is grey;
colour images are converted with the ITU-R 601 luma weights (Pillow's ``convert("L")``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
TRUNCATED = "file is truncated: it ends before its image data does (an interrupted copy or download?)"
#: bit depths a 16-bit container is read as (cameras write 12 or 14 bits into 16-bit files; 8-bit
#: data is sometimes stored in 16 bits)
BIT_DEPTHS = (8, 12, 14, 16)


class ImageReadError(ValueError):
    """An image file that cannot be used; the message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def _pil_to_array(im) -> np.ndarray:
    mode = im.mode
    if mode in ("L", "I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.array(im)
    elif mode in ("P", "PA", "1", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        arr = np.array(im.convert("L"))
    elif mode == "I":  # 32-bit int: usually 16-bit data in a wider container
        arr = np.array(im)
        if arr.min() < 0 or arr.max() > 65535:
            raise ImageReadError(getattr(im, "filename", "?"), f"32-bit integer pixels out of 16-bit range [{arr.min()}, {arr.max()}]")
        arr = arr.astype(np.uint16)
    elif mode == "F":
        arr = np.array(im)
        arr = _float_to_uint16(arr)
    else:
        raise ImageReadError(getattr(im, "filename", "?"), f"unsupported pixel mode {mode!r}")
    return arr


def _float_to_uint16(arr: np.ndarray) -> np.ndarray:
    finite = np.isfinite(arr)
    if not finite.any():
        raise ValueError("no finite pixel values")
    lo, hi = float(arr[finite].min()), float(arr[finite].max())
    scale = 65535.0 / (hi - lo) if hi > lo else 0.0
    return np.clip((np.nan_to_num(arr, nan=lo) - lo) * scale, 0, 65535).astype(np.uint16)


def _tifffile_read(path: Path) -> np.ndarray:
    import tifffile

    arr = tifffile.imread(str(path), key=0)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # RGB(A), possibly 16-bit
        rgb = arr[..., :3].astype(np.float64)
        grey = rgb @ np.array([0.299, 0.587, 0.114])
        arr = np.clip(np.rint(grey), 0, np.iinfo(arr.dtype).max if arr.dtype.kind == "u" else 65535).astype(
            arr.dtype if arr.dtype in (np.uint8, np.uint16) else np.uint16
        )
    elif arr.ndim == 3:  # a stack of planes: take the first
        arr = arr[0]
    if arr.dtype.kind == "f":
        arr = _float_to_uint16(arr)
    elif arr.dtype not in (np.uint8, np.uint16):
        if arr.min() < 0 or arr.max() > 65535:
            raise ValueError(f"pixel values out of 16-bit range ({arr.dtype})")
        arr = arr.astype(np.uint16)
    return arr


def read_image(path) -> np.ndarray:
    """Read an image as a 2-D grey array, ``uint8`` or ``uint16``.

    Raises :class:`ImageReadError` (naming the file) for a missing, unreadable, empty or odd image.
    Multi-page files give their first page.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise ImageReadError(path, "broken symbolic link (its target does not exist)")
    if not path.exists():
        raise ImageReadError(path, "no such file")
    if not path.is_file():
        raise ImageReadError(path, "not a file")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "empty file")
    try:
        with Image.open(path) as im:
            im.seek(0)
            bits = getattr(im, "tag_v2", {}).get(258, (8,))  # TIFF BitsPerSample
            bits = bits if isinstance(bits, tuple) else (bits,)
            if max(bits) > 8 and not im.mode.startswith("I"):
                raise ValueError(f"{max(bits)}-bit {im.mode} TIFF: Pillow would drop bits")
            im.load()
            arr = _pil_to_array(im)
    except ImageReadError:
        raise
    except (OSError, ValueError, UnidentifiedImageError, SyntaxError, EOFError) as err:
        if "truncated" in str(err).lower():
            raise ImageReadError(path, TRUNCATED) from err
        if path.suffix.lower() not in (".tif", ".tiff"):
            raise ImageReadError(path, f"cannot decode image ({err})") from err
        try:  # e.g. 16-bit RGB TIFF, which Pillow cannot open
            arr = _tifffile_read(path)
        except Exception as err2:  # noqa: BLE001 - report whatever the decoder said
            if "failed to read" in str(err2) or "truncated" in str(err2).lower():
                raise ImageReadError(path, TRUNCATED) from err2
            raise ImageReadError(path, f"cannot decode image ({err}; tifffile: {err2})") from err2
    if arr.ndim != 2:
        raise ImageReadError(path, f"expected a 2-D image, got shape {arr.shape}")
    if arr.shape[0] < 8 or arr.shape[1] < 8:
        raise ImageReadError(path, f"image too small ({arr.shape[1]}x{arr.shape[0]} px)")
    return np.ascontiguousarray(arr)


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


def light_background(arr: np.ndarray) -> bool:
    """True for a dark-on-light image (G-band, brightfield): its median pixel (the background, as
    chromosomes cover a minority of a metaphase) lies in the upper half of its 1-99 % range. DAPI and
    Q-band fluorescence (bright on dark) give about 0.0-0.03 there, G-band 0.88-1.0."""
    a = np.asarray(arr, np.float32)
    lo, hi = np.percentile(a, [1, 99])
    if hi <= lo:
        return False
    return bool((np.median(a) - lo) / (hi - lo) > 0.5)


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
