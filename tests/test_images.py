"""Image reading: bit depths, alpha, EXIF, DICOM, corrupt and oversized files, unsafe paths, the bounded cache."""

from __future__ import annotations

import io
import os

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageFile
from pydicom.data import get_testdata_file

from medvr_env.data.images import (
    ImageCache,
    ImageDecodeError,
    UnsafePathError,
    decode_image,
    resolve_inside,
    window_to_uint8,
)


def _png(tmp_path, array, name="img.png", mode=None):
    path = tmp_path / name
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) % 256
    out = decode_image(_png(tmp_path, gray.astype(np.uint8)))
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    assert np.array_equal(out[:, :, 0], gray) and np.array_equal(out[:, :, 0], out[:, :, 2])
    assert not out.flags.writeable


def test_sixteen_bit_is_windowed_to_its_range_not_truncated(tmp_path):
    values = np.linspace(1000, 5000, 32 * 32).reshape(32, 32).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)  # mode I;16
    out = decode_image(path)[:, :, 0]
    assert out.min() == 0 and out.max() == 255  # truncation to 8 bits would saturate everything at 255
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)  # monotone ramp survives


def test_rgba_is_composited_on_black(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:4, :, 3] = 255  # top half opaque red, bottom half transparent
    out = decode_image(_png(tmp_path, rgba))
    assert out.shape == (8, 8, 3)
    assert (out[:4, :, 0] == 200).all() and (out[4:] == 0).all()


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((20, 40, 3), np.uint8)
    array[:, :10] = 255  # a white band on the left of a landscape image
    im = Image.fromarray(array)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    im.save(path, exif=exif, quality=95)
    out = decode_image(path)
    assert out.shape[:2] == (40, 20)  # portrait after transposition
    assert out[:10].mean() > 200 and out[-10:].mean() < 50  # the band is now on top


def test_truncated_file_names_the_file(tmp_path):
    path = _png(tmp_path, np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8), "cut.png")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ImageDecodeError, match="cut.png"):
        decode_image(path)


@pytest.mark.parametrize("content", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_garbage_names_the_file(tmp_path, content):
    path = tmp_path / "broken.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        decode_image(path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ImageDecodeError, match="not found: .*nowhere.png"):
        decode_image(tmp_path / "nowhere.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="empty.png is empty"):
        decode_image(tmp_path / "empty.png")


def test_oversized_image_is_refused_before_decoding(tmp_path, monkeypatch):
    path = _png(tmp_path, np.zeros((300, 400), np.uint8), "big.png")
    loaded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loaded.append(1))
    with pytest.raises(ImageDecodeError, match=r"big.png is 400x300 = 120,000 pixels, over the limit of 100,000"):
        decode_image(path, max_pixels=100_000)
    assert not loaded  # refused from the header alone


def test_bytes_source_uses_the_given_name():
    buf = io.BytesIO()
    Image.fromarray(np.full((5, 6, 3), 7, np.uint8)).save(buf, format="PNG")
    assert decode_image(buf.getvalue(), name="row 3").shape == (5, 6, 3)
    with pytest.raises(ImageDecodeError, match="row 3"):
        decode_image(b"junk", name="row 3")


def test_dicom_uses_the_file_window():
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    assert float(ds.WindowCenter) == 600 and float(ds.WindowWidth) == 1600
    out = decode_image(get_testdata_file("MR_small.dcm"))
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    raw = ds.pixel_array.astype(float) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    expected = window_to_uint8(raw, 600 - 0.5 - 1599 / 2, 600 - 0.5 + 1599 / 2)
    assert np.array_equal(out[:, :, 0], expected)


def test_dicom_without_window_uses_percentiles_and_monochrome1_is_inverted(tmp_path):
    ct = decode_image(get_testdata_file("CT_small.dcm"))[:, :, 0]
    assert ct.shape == (128, 128) and ct.std() > 20  # a real contrast range, not a flat image
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    normal = decode_image(get_testdata_file("MR_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    path = tmp_path / "inverted.dcm"
    ds.save_as(path)
    assert np.array_equal(decode_image(path), 255 - normal)


def test_dicom_rgb_multiframe_and_size_guard():
    us = decode_image(get_testdata_file("US1_UNCR.dcm"))
    assert us.shape == (480, 640, 3) and not np.array_equal(us[..., 0], us[..., 1])
    multi = decode_image(get_testdata_file("emri_small.dcm"))  # 10 frames: the middle one
    frames = pydicom.dcmread(get_testdata_file("emri_small.dcm")).pixel_array
    assert multi.shape == (64, 64, 3) and np.corrcoef(multi[..., 0].ravel(), frames[5].ravel())[0, 1] > 0.99
    with pytest.raises(ImageDecodeError, match="over the limit"):
        decode_image(get_testdata_file("US1_UNCR.dcm"), max_pixels=1000)


def test_corrupt_dicom_names_the_file(tmp_path):
    data = open(get_testdata_file("MR_small.dcm"), "rb").read()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="cut.dcm"):
        decode_image(path)


@pytest.mark.parametrize("bad", ["../secret.png", "images/../../secret.png", "/etc/passwd", "", "a\x00b.png"])
def test_paths_escaping_the_root_are_rejected(tmp_path, bad):
    (tmp_path / "root" / "images").mkdir(parents=True)
    with pytest.raises(UnsafePathError):
        resolve_inside(tmp_path / "root", bad)


def test_symlink_out_of_the_root_is_rejected(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside.png").write_bytes(b"x")
    os.symlink(tmp_path / "outside.png", root / "link.png")
    with pytest.raises(UnsafePathError, match="outside the dataset root"):
        resolve_inside(root, "link.png")
    assert resolve_inside(root, "images/../ok.png") == (root / "ok.png").resolve()


def test_cache_is_bounded_by_bytes_and_evicts_least_recent():
    cache = ImageCache(max_bytes=3 * 100)
    make = lambda: np.zeros(100, np.uint8)  # noqa: E731
    calls = []
    for key in "abc":
        cache.get(key, lambda: calls.append(1) or make())
    cache.get("a", make)  # a is now most recent
    cache.get("d", lambda: calls.append(1) or make())  # evicts b
    assert len(cache) == 3 and cache.nbytes == 300
    cache.get("b", lambda: calls.append(1) or make())
    assert len(calls) == 5 and cache.hits == 1 and cache.misses == 5
    huge = cache.get("huge", lambda: np.zeros(1000, np.uint8))  # over budget: returned, not kept
    assert huge.nbytes == 1000 and "huge" not in cache._items and cache.nbytes <= 300


def test_gray_saved_as_rgb_is_cached_as_one_channel_and_resizes_like_rgb(tmp_path):
    from medvr_env import imaging
    from medvr_env.boxes import Box
    from medvr_env.data.images import stored_bytes

    gray = np.random.default_rng(1).integers(0, 255, (120, 160), dtype=np.uint8)
    path = _png(tmp_path, np.repeat(gray[:, :, None], 3, axis=2), "gray_rgb.png")
    out = decode_image(path)
    assert out.shape == (120, 160, 3) and out.strides[2] == 0 and stored_bytes(out) == 120 * 160
    colour = decode_image(_png(tmp_path, np.dstack([gray, gray, 255 - gray]), "colour.png"))
    assert colour.strides[2] != 0 and stored_bytes(colour) == 120 * 160 * 3
    dense = np.ascontiguousarray(out)
    for size in [(64, 48), (320, 240), (160, 120)]:
        box = Box(10, 20, 150, 110)
        assert np.array_equal(imaging.resize(imaging.region(out, box), size),
                              imaging.resize(imaging.region(dense, box), size))


def test_decode_errors_do_not_name_memory_addresses():
    """PIL names its in-memory file by address; the message must be the same in every run (failed-sample reasons)."""
    from medvr_env.data.images import ImageDecodeError

    with pytest.raises(ImageDecodeError) as caught:
        decode_image(b"not an image" * 8, name="x.png")
    assert "0x" not in str(caught.value) and "object at" not in str(caught.value)
    assert str(caught.value).startswith("cannot decode image x.png: ")
