"""Reading medical images from disk safely: paths, decoding, bit depth, DICOM, and a bounded cache.

Every file dataset loads pixels through :func:`decode_image` and keeps them in an
:class:`ImageCache`, so the rules are the same everywhere:

- a manifest path is resolved inside the dataset root, and one that escapes it
  (``../``, an absolute path, a symlink out) is rejected (:func:`resolve_inside`);
- the image size is read from the header and an image over ``max_pixels`` is
  refused before any pixel is decoded (decompression bombs);
- grayscale, palette, RGBA, 16-bit and float images become ``(H, W, 3)`` uint8 RGB;
  16-bit and float data are windowed to their own range, not truncated;
- EXIF orientation is applied, so a phone photo of a film is upright;
- DICOM files are read with pydicom: rescale slope/intercept, the file's own
  window centre/width when present (else the 0.5-99.5 percentile range),
  MONOCHROME1 inverted, the middle frame of a multi-frame file;
- a corrupt or truncated file raises :class:`ImageDecodeError` naming the file.
"""

from __future__ import annotations

import io
import os
import re
import stat
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageChops, ImageOps

from .sample import as_rgb_uint8

DEFAULT_MAX_PIXELS = 64_000_000
"""Largest image (width x height) decoded by default: a 8000 x 8000 whole-slide tile still fits."""

DEFAULT_CACHE_BYTES = 512 * 2**20
DICOM_PREAMBLE = 128
_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")


class ImageDecodeError(ValueError):
    """An image file could not be read: corrupt, truncated, unsupported or too large. The message names the file."""


class UnsafePathError(ValueError):
    """A dataset manifest names a file outside the dataset root."""


def resolve_inside(root: str | os.PathLike[str], relative: str) -> Path:
    """``root / relative``, refusing absolute paths and paths that leave ``root`` (also through symlinks)."""
    if not isinstance(relative, str) or not relative.strip():
        raise UnsafePathError(f"empty image path in the manifest of {root}")
    if "\x00" in relative:
        raise UnsafePathError(f"image path {relative!r} contains a NUL byte")
    candidate = Path(relative.replace("\\", "/"))
    if candidate.is_absolute() or candidate.drive:
        raise UnsafePathError(f"image path {relative!r} is absolute; manifest paths must be relative to {root}")
    base = Path(root).resolve()
    full = (base / candidate).resolve()
    if full != base and base not in full.parents:
        raise UnsafePathError(f"image path {relative!r} resolves to {full}, outside the dataset root {base}")
    return full


def read_regular_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of ``path``, which must be a regular file (after symlinks).

    The file is opened non-blocking and checked with ``fstat`` before reading, so a named
    pipe, socket or device under a dataset folder is refused at once instead of hanging
    ``reset()`` (checking the path first and then opening it would leave a window for a swap).

    Raises:
        FileNotFoundError: nothing at ``path``.
        IsADirectoryError: ``path`` is a folder.
        OSError: ``path`` is not a regular file (the message says what it is), or cannot be read.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(f"{path} is a folder, not a file")
        if not stat.S_ISREG(mode):
            raise OSError(f"{path} is a {_file_kind(mode)}, not a regular file; only regular files are read")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as fh:
            fd = -1
            return fh.read()
    finally:
        if fd >= 0:
            os.close(fd)


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "named pipe"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return kind
    return "special file"


def is_dicom(head: bytes, name: str = "") -> bool:
    """A DICOM Part 10 file (``DICM`` after the 128-byte preamble) or a ``.dcm`` name."""
    return head[DICOM_PREAMBLE:DICOM_PREAMBLE + 4] == b"DICM" or name.lower().endswith((".dcm", ".dicom"))


def decode_image(source: str | os.PathLike[str] | bytes, *, name: str | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a file path or encoded bytes to a read-only ``(H, W, 3)`` uint8 RGB array.

    Grayscale images are returned as a broadcast view of one channel (``strides[2] == 0``),
    which :mod:`medvr_env.imaging` resizes as a single channel.

    Args:
        source: A path, or the encoded bytes (as parquet releases store images).
        name: What to call the image in errors (defaults to the path).
        max_pixels: Refuse images with more pixels than this, before decoding them.

    Raises:
        ImageDecodeError: missing, corrupt, truncated, unsupported or oversized image.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = name or "<image bytes>"
    else:
        label = name or str(source)
        try:
            data = read_regular_file(source)
        except FileNotFoundError:
            raise ImageDecodeError(f"image file not found: {label}") from None
        except OSError as exc:
            raise ImageDecodeError(f"cannot read image file {label}: {exc}") from exc
    if not data:
        raise ImageDecodeError(f"image file {label} is empty")
    try:
        if is_dicom(data[:DICOM_PREAMBLE + 4], label):
            return _as_rgb(_decode_dicom(data, label, max_pixels))
        return _as_rgb(_decode_raster(data, label, max_pixels))
    except ImageDecodeError:
        raise
    except Exception as exc:  # PIL and pydicom raise many types for damaged files
        reason = _OBJECT_REPR.sub("", str(exc))  # PIL names its BytesIO by address: not stable across runs
        raise ImageDecodeError(f"cannot decode image {label}: {type(exc).__name__}: {reason}") from exc


def _as_rgb(pixels: np.ndarray) -> np.ndarray:
    """Grayscale stays one channel in memory, broadcast (read-only) to ``(H, W, 3)``: a third of the cache."""
    if pixels.ndim == 2:
        return np.broadcast_to(np.ascontiguousarray(pixels)[:, :, None], (*pixels.shape, 3))
    return as_rgb_uint8(pixels)


def _check_size(width: int, height: int, label: str, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image {label} has an empty size {width}x{height}")
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"image {label} is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} "
            "(a decompression-bomb guard); raise max_image_pixels if the file is trusted"
        )


def _decode_raster(data: bytes, label: str, max_pixels: int) -> np.ndarray:
    with warnings.catch_warnings():
        # Our own limit is checked from the header below; PIL's softer warning would only be noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as im:
            _check_size(im.width, im.height, label, max_pixels)
            im.load()  # raises OSError on truncated data (LOAD_TRUNCATED_IMAGES stays False)
            im = ImageOps.exif_transpose(im)
            return _pil_to_array(im)


def _pil_to_array(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode == "RGB":
        # Most medical JPEGs are grayscale saved as RGB: keep one channel (checked in C, faster than numpy).
        r, g, b = im.split()
        if ImageChops.difference(r, g).getbbox() is None and ImageChops.difference(g, b).getbbox() is None:
            return np.asarray(r)
        return np.asarray(im)
    if mode == "L":
        return np.asarray(im)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return window_to_uint8(np.asarray(im).astype(np.float64))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        # Composite on black: medical overlays are drawn on dark backgrounds.
        rgba = np.asarray(im.convert("RGBA")).astype(np.float32)
        alpha = rgba[:, :, 3:4] / 255.0
        return np.round(rgba[:, :, :3] * alpha).astype(np.uint8)
    return np.asarray(im.convert("RGB"))


def window_to_uint8(values: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Map ``[low, high]`` linearly to ``0..255`` (defaults: the data's own min and max)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, np.uint8)
    low = float(finite.min()) if low is None else low
    high = float(finite.max()) if high is None else high
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    scaled = (np.nan_to_num(values, nan=low) - low) * (255.0 / (high - low))
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def _decode_dicom(data: bytes, label: str, max_pixels: int) -> np.ndarray:
    import pydicom  # only DICOM users pay for the import

    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise ImageDecodeError(f"DICOM file {label} has no pixel data")
    _check_size(cols, rows, label, max_pixels)
    pixels = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames > 1:
        pixels = pixels[frames // 2]
    if samples == 3:
        # pydicom converts YBR to RGB by default; scale any bit depth to 8 bits.
        return pixels if pixels.dtype == np.uint8 else window_to_uint8(pixels)
    values = pixels.astype(np.float64)
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    values = values * slope + intercept
    low, high = _dicom_window(ds, values)
    gray = window_to_uint8(values, low, high)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        gray = 255 - gray
    return gray


def _dicom_window(ds, values: np.ndarray) -> tuple[float, float]:
    """The file's first window centre/width (DICOM's linear function), else the 0.5-99.5 percentile range."""
    c, w = _first_number(ds.get("WindowCenter")), _first_number(ds.get("WindowWidth"))
    if np.isfinite(c) and np.isfinite(w) and w >= 1:
        return c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
    lo, hi = np.percentile(values, [0.5, 99.5])
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    return float(lo), float(hi)


def _first_number(value) -> float:
    """A DICOM value that may be multi-valued (several windows): its first entry, or NaN."""
    if value is None:
        return float("nan")
    try:
        return float(value if isinstance(value, (str, bytes, int, float)) else value[0])
    except (TypeError, ValueError, IndexError):
        return float("nan")


def stored_bytes(image: np.ndarray) -> int:
    """Memory an image really holds: broadcast channels (stride 0) count once."""
    if image.ndim == 3 and image.strides[2] == 0:
        return image.nbytes // image.shape[2]
    return image.nbytes


class ImageCache:
    """A least-recently-used cache of decoded images, bounded by total bytes.

    Safe to share between threads. An image larger than the whole budget is
    returned but not kept. ``hits``, ``misses`` and ``nbytes`` are for benchmarks.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"cache max_bytes must be an integer >= 0, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str, load: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached array for ``key``, calling ``load()`` on a miss."""
        with self._lock:
            image = self._items.get(key)
            if image is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return image
            self.misses += 1
        image = load()
        with self._lock:
            size = stored_bytes(image)
            if size <= self.max_bytes and key not in self._items:
                self._items[key] = image
                self.nbytes += size
                while self.nbytes > self.max_bytes:
                    _, old = self._items.popitem(last=False)
                    self.nbytes -= stored_bytes(old)
        return image

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = 0

    def __getstate__(self) -> dict:
        # Pickled envs (vector workers) start with an empty cache rather than shipping pixels.
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_bytes"])
