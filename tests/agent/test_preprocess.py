from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
import sklearn

from agent.errors import InputError
from agent.preprocess import Preprocessor, letterbox_geometry
from edgefleet.contract import Preprocessing, TensorSpec
from edgefleet.contract.manifest import ResizeSpec
from tests.utils.artifacts import PIXEL_SCALE, digits_images

IMAGES = Path(sklearn.__file__).parent / "datasets" / "images"
CHINA = IMAGES / "china.jpg"
FLOWER = IMAGES / "flower.jpg"


def _nearest_resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize by hand: source index floor(dst * src / dst_size)."""
    h, w = image.shape[:2]
    ys = np.floor(np.arange(height) * (h / height)).astype(int)
    xs = np.floor(np.arange(width) * (w / width)).astype(int)
    return image[ys][:, xs]


def test_rgb_nchw_matches_hand_computed_reference() -> None:
    spec = Preprocessing(
        color="rgb",
        resize=ResizeSpec(width=40, height=30, mode="stretch", interpolation="nearest"),
        scale=1 / 255,
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
        layout="nchw",
    )
    tensor = TensorSpec(name="x", shape=[1, 3, 30, 40], dtype="float32")
    got = Preprocessor(spec, tensor)(CHINA.read_bytes())

    bgr = cv2.imread(str(CHINA))
    small = _nearest_resize(bgr, 40, 30).astype(np.float64)
    expected = np.empty((1, 3, 30, 40))
    for c, (mean, std) in enumerate(zip(spec.mean, spec.std, strict=True)):
        expected[0, c] = (small[:, :, 2 - c] / 255 - mean) / std  # BGR → RGB by hand
    assert got.shape == (1, 3, 30, 40) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_gray_invert_flat_matches_reference() -> None:
    spec = Preprocessing(
        color="gray",
        resize=ResizeSpec(width=16, height=12, interpolation="nearest"),
        scale=2.0,
        invert=True,
        layout="flat",
    )
    tensor = TensorSpec(name="x", shape=["batch", 192], dtype="float32")
    got = Preprocessor(spec, tensor)(FLOWER.read_bytes())
    gray = cv2.imread(str(FLOWER), cv2.IMREAD_GRAYSCALE)
    expected = (255 - _nearest_resize(gray, 16, 12).astype(np.float64)) * 2.0
    assert got.shape == (1, 192)
    np.testing.assert_allclose(got, expected.reshape(1, -1), atol=1e-4)


def test_bgr_nhwc_uint8_keeps_pixels() -> None:
    spec = Preprocessing(color="bgr", scale=1.0, layout="nhwc", dtype="uint8")
    tensor = TensorSpec(name="x", shape=[1, 427, 640, 3], dtype="uint8")
    got = Preprocessor(spec, tensor)(CHINA.read_bytes())
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got[0], cv2.imread(str(CHINA)))


def test_digit_pngs_map_back_to_digits_features(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    spec = Preprocessing(
        color="gray", resize=ResizeSpec(width=8, height=8), scale=PIXEL_SCALE, layout="flat"
    )
    pre = Preprocessor(spec, TensorSpec(name="input", shape=["batch", 64], dtype="float32"))
    x = load_digits().data
    for i, path in enumerate(digits_images(tmp_path, 5, start=1400)):
        np.testing.assert_allclose(pre(path.read_bytes())[0], x[1400 + i], atol=PIXEL_SCALE)


@pytest.mark.parametrize(
    ("src", "dst", "expected"),
    [
        ((640, 427), (320, 320), (0.5, 0, 53, 320, 214)),
        ((100, 400), (200, 200), (0.5, 75, 0, 50, 200)),
        ((300, 300), (300, 300), (1.0, 0, 0, 300, 300)),
    ],
)
def test_letterbox_geometry(
    src: tuple[int, int], dst: tuple[int, int], expected: tuple[float, int, int, int, int]
) -> None:
    box = letterbox_geometry(*src, *dst)
    assert (box.scale, box.pad_x, box.pad_y, box.width, box.height) == expected


def test_letterbox_pads_and_centres_the_image() -> None:
    spec = Preprocessing(
        color="bgr",
        resize=ResizeSpec(width=320, height=320, mode="letterbox", pad_value=7),
        scale=1.0,
        layout="nhwc",
        dtype="uint8",
    )
    got = Preprocessor(spec, TensorSpec(name="x", shape=[1, 320, 320, 3], dtype="uint8"))(
        CHINA.read_bytes()
    )[0]
    assert got.shape == (320, 320, 3)
    assert (got[:53] == 7).all() and (got[53 + 214 :] == 7).all()
    inner = got[53 : 53 + 214]
    expected = cv2.resize(cv2.imread(str(CHINA)), (320, 214), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(inner, expected)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not an image at all",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 100,
        b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4,
        bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8)),
    ],
)
def test_corrupt_bytes_raise_input_error(data: bytes) -> None:
    spec = Preprocessing(color="rgb", resize=ResizeSpec(width=8, height=8))
    pre = Preprocessor(spec, TensorSpec(name="x", shape=[1, 3, 8, 8], dtype="float32"))
    with pytest.raises(InputError) as info:
        pre(data)
    assert info.value.kind == "corrupt_image"


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def test_npy_tensors_are_checked_and_batched() -> None:
    pre = Preprocessor(None, TensorSpec(name="input", shape=["batch", 64], dtype="float32"))
    row = np.arange(64, dtype=np.float32)
    np.testing.assert_array_equal(pre(_npy(row)), row[np.newaxis])
    assert pre(_npy(np.zeros((3, 64), np.float32))).shape == (3, 64)
    assert pre(_npy(np.zeros((1, 64), np.float64))).dtype == np.float32
    assert pre(_npy(np.zeros((1, 64), np.int64))).dtype == np.float32


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((1, 63), np.float32),
        np.zeros((2, 2, 64), np.float32),
        np.zeros((1, 64), np.complex64),
        np.array([{"a": 1}], dtype=object),
    ],
)
def test_bad_npy_tensors_are_refused(array: np.ndarray) -> None:
    pre = Preprocessor(None, TensorSpec(name="input", shape=["batch", 64], dtype="float32"))
    with pytest.raises(InputError) as info:
        pre(_npy(array))
    assert info.value.kind.startswith("bad_tensor")


def test_truncated_npy_is_refused() -> None:
    pre = Preprocessor(None, TensorSpec(name="input", shape=["batch", 64], dtype="float32"))
    data = _npy(np.zeros((100, 64), np.float32))
    with pytest.raises(InputError, match="unreadable .npy"):
        pre(data[: len(data) // 2])


def test_images_need_preprocessing() -> None:
    pre = Preprocessor(None, TensorSpec(name="input", shape=["batch", 64], dtype="float32"))
    with pytest.raises(InputError, match="no preprocessing"):
        pre(CHINA.read_bytes())


def test_shape_mismatch_is_found_before_serving() -> None:
    spec = Preprocessing(color="rgb", resize=ResizeSpec(width=32, height=32), layout="nchw")
    fits = Preprocessor(spec, TensorSpec(name="x", shape=["n", 3, 32, 32], dtype="float32"))
    assert fits.image_shape() == (1, 3, 32, 32) and fits.mismatch() is None
    wrong = Preprocessor(spec, TensorSpec(name="x", shape=[1, 3, 224, 224], dtype="float32"))
    assert wrong.mismatch() == "preprocessing makes (1, 3, 32, 32), input 'x' is (1, 3, 224, 224)"
    flat = Preprocessing(color="gray", resize=ResizeSpec(width=8, height=8), layout="flat")
    assert Preprocessor(flat, TensorSpec(name="x", shape=[1, 64], dtype="int8")).mismatch() == (
        "preprocessing dtype float32 != input dtype int8"
    )
