"""scenarios.payloads and .signatures: payloads from metadata or files, checked and encoded."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from harness.models.zoo import MODEL_NAMES, model_signature
from scenarios.payloads import (
    PayloadError,
    PayloadSpec,
    build_payload,
    inputs_from_rest_body,
    rest_body,
)
from scenarios.signatures import Signature, TensorSpec, from_rest_metadata, pick
from tests.conftest import shared_testdata

TF_NAMES = {"float32": "DT_FLOAT", "int32": "DT_INT32"}


def zoo_signature(name: str, **options: object) -> Signature:
    """The serving_default signature a built-in model declares, as metadata would give it."""
    declared = model_signature(name, options)["inputs"]
    inputs = {
        alias: TensorSpec(alias, TF_NAMES[spec["dtype"]], tuple(spec["shape"]))
        for alias, spec in declared.items()
    }
    return Signature("serving_default", "tensorflow/serving/predict", inputs)


def signature(**inputs: tuple[str, tuple[int, ...] | None]) -> Signature:
    specs = {alias: TensorSpec(alias, dtype, shape) for alias, (dtype, shape) in inputs.items()}
    return Signature("serving_default", "tensorflow/serving/predict", specs)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_random_payload_fits_every_built_in_model(name: str) -> None:
    sig = zoo_signature(name, **({"image_size": 32} if name == "cnn" else {}))
    payload = build_payload(sig, PayloadSpec(rows=3, fill_dim=5), name)
    for alias, spec in sig.inputs.items():
        array = payload.inputs[alias]
        assert TF_NAMES[array.dtype.name] == spec.dtype
        assert array.shape[0] == 3
        others = zip(array.shape[1:], spec.shape[1:], strict=True)
        assert all(size in (want, 5) for size, want in others)


def test_random_payload_is_reproducible_and_ints_stay_below_int_high() -> None:
    sig = signature(tokens=("DT_INT32", (-1, -1)))
    spec = PayloadSpec(rows=4, fill_dim=6, seed=3, int_high=10)
    first = build_payload(sig, spec, "m").inputs["tokens"]
    np.testing.assert_array_equal(first, build_payload(sig, spec, "m").inputs["tokens"])
    assert first.shape == (4, 6) and first.min() >= 0 and first.max() < 10


def test_random_strings_and_unknown_rank() -> None:
    payload = build_payload(signature(raw=("DT_STRING", None)), PayloadSpec(rows=2), "m")
    raw = payload.inputs["raw"]
    assert raw.shape == (2,) and all(isinstance(item, bytes) and item for item in raw)


def test_npz_file_per_input(tmp_path: Path) -> None:
    path = tmp_path / "p.npz"
    np.savez(path, a=np.ones((2, 3), np.float64), b=np.zeros((2,), np.int64))
    sig = signature(a=("DT_FLOAT", (-1, 3)), b=("DT_INT64", (-1,)))
    payload = build_payload(sig, PayloadSpec(file=str(path)), "m")
    assert payload.inputs["a"].dtype == np.float32  # float64 → float32 is accepted
    assert payload.source == str(path)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.ones((2, 5), np.float32), "dimension 1 must be 16"),
        (np.ones((16,), np.float32), r"has shape \(16,\); the signature wants \[-1,16\]"),
        (np.ones((2, 16), np.float64) * 1.5, None),
        (np.array([["a"] * 16]), "has dtype <U1; the signature wants DT_FLOAT"),
    ],
)
def test_npy_file_is_checked_against_the_signature(
    tmp_path: Path, array: np.ndarray, message: str | None
) -> None:
    path = tmp_path / "p.npy"
    np.save(path, array)
    sig = zoo_signature("mlp")
    if message is None:
        assert build_payload(sig, PayloadSpec(file=str(path)), "mlp").inputs["x"].shape == (2, 16)
        return
    with pytest.raises(PayloadError, match=message) as caught:
        build_payload(sig, PayloadSpec(file=str(path)), "mlp")
    assert "does not match signature 'serving_default' of model 'mlp'" in str(caught.value)


def test_floats_are_not_truncated_into_integer_inputs(tmp_path: Path) -> None:
    path = tmp_path / "p.npy"
    np.save(path, np.full((1, 4), 1.5))
    with pytest.raises(PayloadError, match="has dtype float64; the signature wants DT_INT32"):
        build_payload(zoo_signature("transformer"), PayloadSpec(file=str(path)), "transformer")


def test_missing_and_unknown_inputs_are_named(tmp_path: Path) -> None:
    path = tmp_path / "p.npz"
    np.savez(path, y=np.ones((1, 16), np.float32))
    with pytest.raises(
        PayloadError, match=r"missing input\(s\) \['x'\]; unknown input\(s\) \['y'\]"
    ):
        build_payload(zoo_signature("mlp"), PayloadSpec(file=str(path)), "mlp")


def test_one_array_for_several_inputs_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.npy"
    np.save(path, np.ones((1, 3), np.float32))
    sig = signature(a=("DT_FLOAT", (-1, 3)), b=("DT_FLOAT", (-1, 3)))
    with pytest.raises(PayloadError, match="holds one array, but signature"):
        build_payload(sig, PayloadSpec(file=str(path)), "m")


def test_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    sig = zoo_signature("mlp")
    with pytest.raises(PayloadError, match="does not exist"):
        build_payload(sig, PayloadSpec(file=str(tmp_path / "nope.npy")), "mlp")
    (tmp_path / "p.csv").write_text("1,2")
    with pytest.raises(PayloadError, match=r"use \.npy, \.npz or \.json"):
        build_payload(sig, PayloadSpec(file=str(tmp_path / "p.csv")), "mlp")


def test_json_file_in_rest_row_format_with_b64_strings(tmp_path: Path) -> None:
    body = {
        "instances": [
            {"x": [1.0, 2.0], "raw": {"b64": base64.b64encode(b"\x00\x01").decode()}},
            {"x": [3, 4], "raw": {"b64": base64.b64encode(b"zz").decode()}},
        ]
    }
    path = tmp_path / "p.json"
    path.write_text(json.dumps(body))
    sig = signature(x=("DT_FLOAT", (-1, 2)), raw=("DT_STRING", (-1,)))
    payload = build_payload(sig, PayloadSpec(file=str(path)), "m")
    np.testing.assert_array_equal(payload.inputs["x"], [[1, 2], [3, 4]])
    assert list(payload.inputs["raw"]) == [b"\x00\x01", b"zz"]


def test_rest_body_row_and_columnar_read_back_the_same() -> None:
    inputs = {
        "x": np.array([[0.5, 0.25], [1.0, 2.0]], np.float32),
        "raw": np.array([b"ab", b"\xff"], dtype=object),
    }
    sig = signature(x=("DT_FLOAT", (-1, 2)), raw=("DT_STRING", (-1,)))
    for columnar in (False, True):
        body = json.loads(rest_body(inputs, "serving_default", columnar=columnar))
        assert body["signature_name"] == "serving_default"
        assert ("inputs" in body) == columnar
        back = inputs_from_rest_body(body, sig)
        np.testing.assert_array_equal(back["x"], inputs["x"])
        assert list(back["raw"]) == [b"ab", b"\xff"]


def test_rest_body_writes_float32_values_short() -> None:
    value = np.array([[0.1]], np.float32)  # float64 expansion: 0.10000000149011612
    assert rest_body({"x": value}, "", columnar=False) == b'{"instances":[[0.1]]}'


def test_row_format_needs_equal_batch_sizes() -> None:
    inputs = {"a": np.ones((2, 1), np.float32), "b": np.ones((3, 1), np.float32)}
    with pytest.raises(PayloadError, match="same dimension 0 in every input"):
        rest_body(inputs, "", columnar=False)


def test_half_plus_two_metadata_from_tf_serving() -> None:
    metadata = json.loads(shared_testdata("half_plus_two_model_metadata.json").read_text())
    signatures = from_rest_metadata(metadata)
    assert pick(signatures, "serving_default", "half_plus_two").inputs["x"].shape == (-1, 1)
    assert signatures["classify_x_to_y"].inputs["inputs"].shape is None
    with pytest.raises(ValueError, match="has no signature 'nope'; it has: classify_x_to_y"):
        pick(signatures, "nope", "half_plus_two")
