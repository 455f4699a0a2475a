"""Real medical background images shipped by installed packages (no downloads).

The procedural dataset (:mod:`medvr_env.data.procedural`) draws synthetic findings on
top of these images. Every background is a real, de-identified clinical image that an
installed package already carries:

- ``pydicom-data`` (the ``data_store`` package, reached through
  ``pydicom.data.get_testdata_file(name, download=False)``) and pydicom's own test
  files: NEMA DICOM WG04 sample images, GDCM test images, a TCIA CT slice.
- ``scikit-image`` (``skimage.data``): a fundus photograph (CC0) and an
  immunohistochemistry slide.

Decoding (:func:`load_background`) turns each into a read-only ``(H, W, 3)`` uint8 RGB
array:

- grayscale DICOM: the modality LUT (RescaleSlope / RescaleIntercept) is applied, then
  a linear window: the entry's own window if it sets one, else the file's first
  WindowCenter / WindowWidth, else the 1st-99th percentiles of the pixel values;
  MONOCHROME1 images are inverted after windowing so that bright always means dense;
- RGB DICOM is used as decoded; YBR_* DICOM needs no extra step because pydicom 3's
  ``pixel_array`` already converts YBR_FULL / YBR_FULL_422 / YBR_ICT / YBR_RCT to RGB;
- PALETTE COLOR DICOM goes through the palette (``apply_color_lut``), scaled to 8 bits;
- multi-frame files use one frame (``frame``); each entry may crop to a region of
  interest (``roi``) that drops burnt-in text and empty borders.

Decoded backgrounds are cached per process (``functools.lru_cache``).

Some of these studies show real pathology (round opacities in the chest radiograph, a
haemorrhage in the head CT, a fibroma in the tibia, a liver lesion in the abdominal MR).
The procedural questions are only about the small synthetic findings drawn on top.

Splits are disjoint: no image is used by more than one split.

=========  ==================================================================
split      backgrounds
=========  ==================================================================
``train``  ``chest_cr`` (CR chest), ``shoulder_mr`` (MR shoulder),
           ``head_ct`` (CT head), ``abdomen_ct`` (CT abdomen / pancreas),
           ``lymph_node_us`` (colour Doppler US), ``fundus`` (fundus photo)
``test``   ``tibia_cr`` (CR lower leg), ``abdomen_mr`` (MR abdomen / liver),
           ``skull_base_ct`` (CT head, skull base), ``pelvis_us`` (US pelvis),
           ``histology_ihc`` (IHC histology)
=========  ==================================================================

Candidates that were inspected and left out: the ``emri_small*`` multi-frame MR files
(64x64 per frame, far too small for a 1024 px image), ``MR_small`` / ``CT_small``
(64 / 128 px), ``OBXXXX1A`` (obstetric US frame that is almost entirely black),
``color3d_jpeg_baseline`` (echo cine, mostly black sector background),
``eCT_Supplemental`` (enhanced CT with a broken-looking value range), the
``JPEG2000_UNC`` whole-body bone scan (1024x256, very low resolution),
``examples_*`` (cropped copies of files listed above), the ``mlut_18`` / ``vlut_04`` /
``image_dfl`` test patterns, SEG masks and the ``SC_*`` synthetic colour patterns.
Files that need a JPEG Lossless decoder (pylibjpeg / GDCM) are avoided, so the
catalogue decodes with pydicom + numpy (+ Pillow for the JPEG 2000 CT slice).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .sample import as_rgb_uint8

__all__ = [
    "Background",
    "BackgroundUnavailableError",
    "BACKGROUNDS",
    "SPLIT_BACKGROUNDS",
    "SPLITS",
    "backgrounds_for_split",
    "get_background",
    "load_background",
]

Window = tuple[float, float]  # (center, width)
PERCENTILE_WINDOW = "percentile"  # an entry's ``window`` may force the 1-99 percentile window
Roi = tuple[float, float, float, float]  # (x1, y1, x2, y2) as fractions of the decoded image


class BackgroundUnavailableError(RuntimeError):
    """A background's package or file is not installed."""


@dataclass(frozen=True)
class Background:
    """One catalogue entry.

    Attributes:
        name: Catalogue key.
        modality: Imaging modality (``"CR"``, ``"CT"``, ``"MR"``, ``"US"``, ``"fundus"``, ``"histology"``).
        organ: Body part shown.
        package: The pip package that ships the file (named in errors when it is missing).
        filename: File name inside that package (DICOM) or the ``skimage.data`` function name.
        source: Provenance and licence of the image.
        loader: Returns the decoded, windowed ``(H, W, 3)`` uint8 image (before the ROI crop).
        roi: Region kept, as fractions ``(x1, y1, x2, y2)`` of the decoded image.
    """

    name: str
    modality: str
    organ: str
    package: str
    filename: str
    source: str
    loader: Callable[[], np.ndarray]
    roi: Roi = (0.0, 0.0, 1.0, 1.0)


# --------------------------------------------------------------------------- decoding
def _to_uint8_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """Linear window ``[center - width/2, center + width/2]`` -> ``[0, 255]``."""
    width = max(float(width), 1e-6)
    lo = float(center) - width / 2.0
    scaled = (values.astype(np.float32) - lo) * (255.0 / width)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _first_value(value: object) -> float:
    """First number of a possibly multi-valued DICOM element."""
    try:
        return float(value[0])  # type: ignore[index]
    except TypeError:
        return float(value)  # type: ignore[arg-type]


def _dicom_path(filename: str, package: str) -> str:
    try:
        from pydicom.data import get_testdata_file
    except ImportError as exc:  # pragma: no cover - pydicom is a hard dependency
        raise BackgroundUnavailableError(
            f"background file {filename!r} needs pydicom: pip install pydicom {package}"
        ) from exc
    path = get_testdata_file(filename, download=False)
    if path is None:
        raise BackgroundUnavailableError(
            f"DICOM test file {filename!r} was not found; it is shipped by the {package!r} package: "
            f"pip install {package}"
        )
    return str(path)


def _load_dicom(
    filename: str, package: str, frame: int | None = None, window: Window | str | None = None
) -> np.ndarray:
    """Decode one DICOM frame to RGB uint8 (see the module docstring for the rules)."""
    path = _dicom_path(filename, package)
    import pydicom
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # test files carry harmless VR / value warnings
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array  # YBR_* is converted to RGB here (pydicom >= 3)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        arr = arr[frame or 0]
    elif frame not in (None, 0):
        raise ValueError(f"{filename} has a single frame, got frame={frame}")

    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        if rgb.dtype != np.uint8:
            peak = 255 if int(np.max(rgb)) <= 255 else 65535
            rgb = np.clip(np.rint(rgb.astype(np.float32) * (255.0 / peak)), 0, 255).astype(np.uint8)
        return rgb
    if arr.ndim == 3:  # RGB (or YBR already converted to RGB by pydicom)
        if arr.dtype != np.uint8:
            bits = int(ds.get("BitsStored", 8) or 8)
            arr = np.clip(np.rint(arr.astype(np.float32) * (255.0 / (2**bits - 1))), 0, 255).astype(np.uint8)
        return arr

    values = apply_modality_lut(arr, ds).astype(np.float32)  # RescaleSlope / RescaleIntercept
    file_center, file_width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if isinstance(window, tuple):
        center, width = window
    elif window != PERCENTILE_WINDOW and file_center not in (None, "") and file_width not in (None, ""):
        center, width = _first_value(file_center), _first_value(file_width)
    else:
        lo, hi = np.percentile(values, [1.0, 99.0])
        center, width = (lo + hi) / 2.0, max(hi - lo, 1.0)
    gray = _to_uint8_window(values, center, width)
    if photometric == "MONOCHROME1":
        gray = 255 - gray
    return gray


def _load_skimage(function: str) -> np.ndarray:
    try:
        import skimage.data
    except ImportError as exc:
        raise BackgroundUnavailableError(
            f"background skimage.data.{function}() needs scikit-image: pip install scikit-image"
        ) from exc
    try:
        image = getattr(skimage.data, function)()
    except Exception as exc:  # noqa: BLE001 - e.g. a stripped install without the data file
        raise BackgroundUnavailableError(
            f"skimage.data.{function}() could not be loaded ({exc}); reinstall scikit-image"
        ) from exc
    return np.asarray(image, dtype=np.uint8)


# --------------------------------------------------------------------------- catalogue
_WG04 = "NEMA DICOM WG04 sample dataset (ftp://medical.nema.org/MEDICAL/Dicom/DataSets/WG04)"
_VIA_DATA = "shipped in pydicom-data (MIT-licensed package)"
_VIA_PYDICOM = "shipped in pydicom's test files (MIT-licensed package)"


def _dicom_entry(
    name: str,
    modality: str,
    organ: str,
    filename: str,
    source: str,
    *,
    package: str = "pydicom-data",
    window: Window | str | None = None,
    frame: int | None = None,
    roi: Roi = (0.0, 0.0, 1.0, 1.0),
) -> Background:
    loader = functools.partial(_load_dicom, filename, package, frame, window)
    return Background(name, modality, organ, package, filename, source, loader, roi)


def _skimage_entry(
    name: str, modality: str, organ: str, function: str, source: str, roi: Roi = (0.0, 0.0, 1.0, 1.0)
) -> Background:
    loader = functools.partial(_load_skimage, function)
    return Background(name, modality, organ, "scikit-image", function, source, loader, roi)


_ENTRIES: tuple[Background, ...] = (
    # ---- train
    _dicom_entry(
        "chest_cr", "CR", "chest", "RG1_UNCR.dcm",
        f"Chest radiograph (CR, MONOCHROME1, 1955x1841, window 9000/14000); {_WG04}; {_VIA_DATA}",
        # The file's window (15000/30000) and the 1-99 percentiles both leave the lungs washed out.
        window=(9000.0, 14000.0),
    ),
    _dicom_entry(
        "shoulder_mr", "MR", "shoulder", "MR2_UNCR.dcm",
        f"Shoulder MR (1024x1024, rescale + window); {_WG04}; {_VIA_DATA}",
    ),
    _dicom_entry(
        "head_ct", "CT", "head", "693_UNCR.dcm",
        f"Head CT, brain window from the file (512x512); pydicom regression dataset (issue #693); {_VIA_DATA}",
    ),
    _dicom_entry(
        "abdomen_ct", "CT", "abdomen", "explicit_VR-UN.dcm",
        "Abdominal CT at the pancreas (512x512, JPEG 2000), soft-tissue window 40/400 HU; de-identified "
        "public data from The Cancer Imaging Archive via pydicom issue #968 (see TCIA's data usage policy); "
        f"{_VIA_DATA}",
        window=(40.0, 400.0),
    ),
    _dicom_entry(
        "lymph_node_us", "US", "lymph node", "US1_UNCR.dcm",
        f"Colour Doppler ultrasound of a lymph node (RGB 480x640, image area only); {_WG04}; {_VIA_DATA}",
        roi=(0.07, 0.235, 0.93, 0.69),
    ),
    _skimage_entry(
        "fundus", "fundus", "retina", "retina",
        "Fundus photograph of a normal left eye (1411x1411); Mikael Haggstrom via Wikimedia Commons, "
        "CC0 1.0 public domain dedication; shipped as skimage.data.retina() (scikit-image, BSD-3-Clause)",
    ),
    # ---- test
    _dicom_entry(
        "tibia_cr", "CR", "lower leg", "RG3_UNCR.dcm",
        "Radiograph of the distal tibia (CR, MONOCHROME1, 1760x1760; the study is labelled "
        f"'non-ossifying fibroma'); {_WG04}; {_VIA_DATA}",
        roi=(0.255, 0.0, 0.655, 1.0),  # drop the white collimator strips and the "R" marker
    ),
    _dicom_entry(
        "abdomen_mr", "MR", "abdomen", "MR-SIEMENS-DICOM-WithOverlays.dcm",
        f"Abdominal MR at the liver and kidneys (484x484, file window); GDCM test data; {_VIA_DATA}",
    ),
    _dicom_entry(
        "skull_base_ct", "CT", "head", "J2K_pixelrep_mismatch.dcm",
        "Head CT at the skull base (512x512, JPEG 2000, first file window); pydicom issue #1149 dataset; "
        f"{_VIA_PYDICOM}",
        package="pydicom",
    ),
    _dicom_entry(
        "pelvis_us", "US", "pelvis", "gdcm-US-ALOKA-16.dcm",
        f"Pelvic ultrasound, two panes (16-bit palette colour, 480x640, image area only); GDCM test data; {_VIA_DATA}",
        roi=(0.055, 0.145, 0.99, 0.855),
    ),
    _skimage_entry(
        "histology_ihc", "histology", "colon", "immunohistochemistry",
        "Immunohistochemistry (FHL2 / DAB, hematoxylin counterstain) of colonic glands (512x512); Center for "
        "Microscopy And Molecular Imaging, no known copyright restrictions; shipped as "
        "skimage.data.immunohistochemistry() (scikit-image, BSD-3-Clause)",
    ),
)

BACKGROUNDS: dict[str, Background] = {entry.name: entry for entry in _ENTRIES}
"""Every background by name."""

SPLIT_BACKGROUNDS: dict[str, tuple[str, ...]] = {
    "train": ("chest_cr", "shoulder_mr", "head_ct", "abdomen_ct", "lymph_node_us", "fundus"),
    "test": ("tibia_cr", "abdomen_mr", "skull_base_ct", "pelvis_us", "histology_ihc"),
}
"""Background names per split; no name appears in two splits."""

SPLITS: tuple[str, ...] = tuple(SPLIT_BACKGROUNDS)


def _check_catalogue() -> None:
    seen: dict[str, str] = {}
    for split, names in SPLIT_BACKGROUNDS.items():
        for name in names:
            if name not in BACKGROUNDS:
                raise RuntimeError(f"split {split!r} names unknown background {name!r}")
            if name in seen:
                raise RuntimeError(f"background {name!r} is in splits {seen[name]!r} and {split!r}")
            seen[name] = split
    files: dict[str, str] = {}
    for entry in _ENTRIES:
        if entry.filename in files:
            raise RuntimeError(f"{entry.filename} is used by {files[entry.filename]!r} and {entry.name!r}")
        files[entry.filename] = entry.name


_check_catalogue()


def backgrounds_for_split(split: str) -> tuple[Background, ...]:
    """The backgrounds of ``split`` (``"train"`` or ``"test"``)."""
    if split not in SPLIT_BACKGROUNDS:
        raise ValueError(f"unknown split {split!r}; valid splits: {list(SPLITS)}")
    return tuple(BACKGROUNDS[name] for name in SPLIT_BACKGROUNDS[split])


def get_background(name: str) -> Background:
    """The catalogue entry called ``name``."""
    try:
        return BACKGROUNDS[name]
    except KeyError:
        raise KeyError(f"unknown background {name!r}; known: {sorted(BACKGROUNDS)}") from None


@functools.lru_cache(maxsize=None)
def load_background(name: str) -> np.ndarray:
    """Decoded background ``name``, cropped to its ROI: read-only ``(H, W, 3)`` uint8 RGB (cached per process).

    Raises:
        KeyError: unknown name.
        BackgroundUnavailableError: the package that ships the image is not installed.
    """
    entry = get_background(name)
    image = as_rgb_uint8(entry.loader())
    h, w = image.shape[:2]
    x1, y1, x2, y2 = entry.roi
    c1, r1 = int(round(x1 * w)), int(round(y1 * h))
    c2, r2 = int(round(x2 * w)), int(round(y2 * h))
    if (c1, r1, c2, r2) != (0, 0, w, h):
        image = as_rgb_uint8(image[r1:r2, c1:c2])
    return image
