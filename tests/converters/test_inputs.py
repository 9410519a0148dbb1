"""Side files and option strings: preprocessing JSON, labels, --input-shape, signing keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from converters.errors import InputError
from converters.inputs import (
    MAX_PREPROCESSING_BYTES,
    check_source,
    parse_input_shape,
    read_labels,
    read_preprocessing,
    read_sign_key,
)
from edgefleet.contract import Preprocessing


def test_preprocessing_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "pre.json"
    path.write_text(json.dumps({"color": "gray", "scale": 0.0627, "layout": "flat"}))
    pre = read_preprocessing(path)
    assert (pre.color, pre.layout, pre.scale) == ("gray", "flat", 0.0627)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"[1, 2, 3]", "must be a JSON object, got list"),
        (
            b'{"color": "purple"}',
            r"invalid preprocessing: Invalid enum value .purple. - at `\$\.color`",
        ),
        (b'{"color": "rgb", "mean": [1, 2]}', "mean needs 1 or 3 values"),
        (b'{"color": "rgb", "rm": "-rf"}', "Object contains unknown field `rm`"),
        (b'{"scale": -1}', r"Expected `float` > 0\.0 - at `\$\.scale`"),
        (b"", "not valid JSON"),
    ],
)
def test_bad_preprocessing(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "pre.json"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as err:
        read_preprocessing(path)
    assert "\n" not in str(err.value)


def test_oversized_preprocessing_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    path.write_text('{"color": "rgb", "x": "' + "a" * MAX_PREPROCESSING_BYTES + '"}')
    with pytest.raises(InputError, match="the limit is 65536"):
        read_preprocessing(path)
    with pytest.raises(InputError, match="no such file"):
        read_preprocessing(tmp_path / "missing.json")
    with pytest.raises(InputError, match="no such file"):
        read_preprocessing(tmp_path)


def test_labels_file(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("cat\r\ndog\nbird\n\n\n")
    assert read_labels(path) == ["cat", "dog", "bird"]
    for content, message in [
        ("cat\n\ndog\n", "line 2 is blank"),
        ("cat\ncat\n", "unique"),
        ("\n\n", "is empty"),
        ("x" * 300 + "\n", "longer than 256"),
        ("a\x00b\n", "holds a NUL"),
    ]:
        path.write_text(content)
        with pytest.raises(InputError, match=message):
            read_labels(path)
    path.write_bytes(b"\xff\xfe bad utf8")
    with pytest.raises(InputError, match="not UTF-8"):
        read_labels(path)
    path.write_text("a\n" * 5_000_000)
    with pytest.raises(InputError, match="the limit is 4194304"):
        read_labels(path)


def test_input_shape_syntax() -> None:
    assert parse_input_shape("input=1,64") == ("input", [1, 64])
    assert parse_input_shape("x:0=1,3,224,224") == ("x:0", [1, 3, 224, 224])
    for text in [
        "input",
        "input=",
        "=1,2",
        "input=1,,2",
        "input=1;2",
        "input=-1,64",
        "input=a,b",
        "in put=1",
        "input=1,2,3,4,5,6,7,8,9",
        "x" * 300 + "=1",
    ]:
        with pytest.raises(InputError, match="expected NAME=D1,D2"):
            parse_input_shape(text)
    for text in ["input=0,64", "input=1,99999999"]:
        with pytest.raises(InputError, match="each dimension must be 1.."):
            parse_input_shape(text)


def test_source_and_key_checks(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        check_source(tmp_path / "nope.pkl")
    with pytest.raises(InputError, match="not a regular file"):
        check_source(tmp_path)
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(InputError, match="is empty"):
        check_source(tmp_path / "empty.onnx")
    (tmp_path / "key.pem").write_bytes(b"k" * 20_000)
    with pytest.raises(InputError, match="signing key key.pem is 20000 bytes"):
        read_sign_key(tmp_path / "key.pem")


def test_preprocessing_must_fit_the_input() -> None:
    from converters.inputs import check_preprocessing
    from edgefleet.contract import TensorSpec
    from edgefleet.contract.manifest import ResizeSpec

    flat = TensorSpec(name="input", shape=["batch", 64], dtype="float32")
    image = TensorSpec(name="img", shape=["n", 3, 32, "w"], dtype="float32")
    gray8 = ResizeSpec(width=8, height=8)
    check_preprocessing(Preprocessing(color="gray", resize=gray8, layout="flat"), flat)
    check_preprocessing(Preprocessing(color="rgb", layout="flat"), flat)  # no resize: no claim
    check_preprocessing(Preprocessing(color="rgb", resize=ResizeSpec(width=99, height=32)), image)
    with pytest.raises(InputError, match="makes \\[batch, 192\\] \\(rgb, 8x8, flat\\)"):
        check_preprocessing(Preprocessing(color="rgb", resize=gray8, layout="flat"), flat)
    with pytest.raises(InputError, match="makes 4-D tensors but input 'input'"):
        check_preprocessing(Preprocessing(color="gray", resize=gray8), flat)
    with pytest.raises(InputError, match="but input 'img'"):
        check_preprocessing(
            Preprocessing(color="rgb", resize=ResizeSpec(width=32, height=31)), image
        )
    with pytest.raises(InputError, match="but input 'img'"):
        check_preprocessing(
            Preprocessing(color="rgb", resize=ResizeSpec(width=32, height=32), layout="nhwc"),
            image,
        )
