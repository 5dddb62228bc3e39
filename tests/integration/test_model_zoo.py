"""The built-in models, loaded the way TF Serving loads them: the TF1 session loader + sess.run."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.models.zoo import (
    MODEL_JSON,
    MODEL_NAMES,
    build_model,
    model_options,
    model_signature,
    read_model_json,
)

# Small options keep the builds fast; the default cnn has its own test.
SMALL: dict[str, dict[str, Any]] = {
    "mlp": {},
    "cnn": {"image_size": 64, "classes": 10},
    "transformer": {"vocab": 50, "d_model": 32},
    "synthetic": {"fixed_ms": 1.0, "per_item_ms": 0.1},
}


@dataclass
class Served:
    """A SavedModel loaded with the session loader, run by the tensor names of its signature."""

    session: Any
    signature: Any

    def run(self, array: np.ndarray) -> np.ndarray:
        (feed,) = self.signature.inputs.values()
        (fetch,) = self.signature.outputs.values()
        return self.session.run(fetch.name, {feed.name: array})

    def close(self) -> None:
        self.session.close()


def load(version_dir: Path) -> Served:
    import tensorflow as tf

    session = tf.compat.v1.Session(graph=tf.Graph())
    with session.graph.as_default():
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(version_dir))
    return Served(session, meta.signature_def["serving_default"])


def sample(name: str, batch: int, options: dict[str, Any], seq: int = 7) -> np.ndarray:
    """A valid input batch for model `name` built with `options`."""
    rng = np.random.default_rng(batch)
    opts = {**model_options(name), **options}
    if name == "cnn":
        size = opts["image_size"]
        return rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    if name == "transformer":
        return rng.integers(0, opts["vocab"], (batch, seq)).astype(np.int32)
    return rng.normal(size=(batch, opts["features"])).astype(np.float32)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Base dir of each model, built once with seed 0 and the SMALL options."""
    root = tmp_path_factory.mktemp("zoo")
    return {name: build_model(name, root / name, **SMALL[name]).parent for name in MODEL_NAMES}


@pytest.fixture(scope="module")
def served(built: dict[str, Path]) -> Iterator[dict[str, Served]]:
    models = {name: load(base / "1") for name, base in built.items()}
    yield models
    for model in models.values():
        model.close()


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("batch", [1, 3])
def test_model_runs_any_batch_size_through_session_loader(served, name, batch):
    output = served[name].run(sample(name, batch, SMALL[name]))
    declared = model_signature(name, SMALL[name])["outputs"]
    (spec,) = declared.values()
    assert output.shape == (batch, *spec["shape"][1:])
    assert output.dtype == np.float32
    assert np.isfinite(output).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_signature_matches_model_json_with_batch_dimension_minus_one(built, served, name):
    import tensorflow as tf

    def describe(tensors) -> dict[str, dict]:
        return {
            alias: {
                "dtype": tf.dtypes.as_dtype(info.dtype).name,
                "shape": [dim.size for dim in info.tensor_shape.dim],
            }
            for alias, info in tensors.items()
        }

    signature = served[name].signature
    declared = read_model_json(built[name])
    assert signature.method_name == "tensorflow/serving/predict"
    assert describe(signature.inputs) == declared["inputs"]
    assert describe(signature.outputs) == declared["outputs"]
    assert declared["name"] == name
    assert declared["options"] == {**model_options(name), **SMALL[name]}
    for spec in [*declared["inputs"].values(), *declared["outputs"].values()]:
        assert spec["shape"][0] == -1


def test_version_folder_holds_only_the_saved_model(built):
    base = built["mlp"]
    assert sorted(p.name for p in base.iterdir()) == ["1", MODEL_JSON]
    assert (base / "1" / "saved_model.pb").is_file()
    assert (base / "1" / "variables").is_dir()


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
def test_rows_of_a_batch_do_not_interact(served, name):
    # A batching server concatenates requests; each row's answer must not depend on the others.
    batch = sample(name, 3, SMALL[name])
    together = served[name].run(batch)
    alone = np.concatenate([served[name].run(batch[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
def test_outputs_depend_on_input(served, name):
    output = served[name].run(sample(name, 3, SMALL[name]))
    assert np.abs(output[0] - output[1]).max() > 1e-4


@pytest.mark.parametrize(
    "name", ["mlp", pytest.param("cnn", marks=pytest.mark.slow), "transformer"]
)
def test_seed_decides_the_weights(tmp_path, served, name):
    inputs = sample(name, 2, SMALL[name])
    seed0 = served[name].run(inputs)
    again = _run_once(build_model(name, tmp_path / "again", seed=0, **SMALL[name]), inputs)
    other = _run_once(build_model(name, tmp_path / "other", seed=1, **SMALL[name]), inputs)
    np.testing.assert_allclose(again, seed0, rtol=1e-6, atol=1e-7)
    assert np.abs(other - seed0).max() > 1e-4


def test_transformer_accepts_any_sequence_length(served):
    model = served["transformer"]
    short = model.run(sample("transformer", 2, SMALL["transformer"], seq=3))
    long = model.run(sample("transformer", 2, SMALL["transformer"], seq=40))
    assert short.shape == long.shape == (2, 32)
    assert not np.allclose(short, long)


def test_synthetic_returns_row_sums(served):
    x = sample("synthetic", 5, {})
    np.testing.assert_allclose(served["synthetic"].run(x), x.sum(axis=1, keepdims=True), rtol=1e-6)


def test_synthetic_sleeps_the_declared_time_once(tmp_path):
    fixed_ms, per_item_ms = 2.0, 0.5
    version_dir = build_model("synthetic", tmp_path, fixed_ms=fixed_ms, per_item_ms=per_item_ms)
    with closing(load(version_dir)) as model:
        for rows in (1, 8, 32):
            times = _service_times_ms(model, sample("synthetic", rows, {}), runs=9)
            declared = fixed_ms + per_item_ms * rows
            # Never shorter than declared; the median allows for a loaded 2-core machine.
            assert min(times) >= declared * 0.95, (rows, times)
            assert statistics.median(times) <= declared * 1.15 + 1.0, (rows, times)


def test_synthetic_sleep_does_not_burn_cpu(tmp_path):
    x = sample("synthetic", 1, {})
    with closing(
        load(build_model("synthetic", tmp_path, fixed_ms=200.0, per_item_ms=0.0))
    ) as model:
        model.run(x)  # warm-up
        cpu, wall = time.process_time(), time.perf_counter()
        model.run(x)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert wall >= 0.19
    assert cpu < wall / 4


@pytest.mark.slow
def test_default_cnn_is_a_224_imagenet_classifier(tmp_path):
    probabilities = _run_once(build_model("cnn", tmp_path), sample("cnn", 1, {}))
    assert probabilities.shape == (1, 1000)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)


def test_another_version_of_the_same_model_joins_the_base_dir(tmp_path):
    build_model("mlp", tmp_path, version=1)
    second = build_model("mlp", tmp_path, version=2, seed=7)
    assert second == tmp_path / "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2", MODEL_JSON]


def test_existing_version_is_not_overwritten(tmp_path):
    build_model("synthetic", tmp_path)
    before = (tmp_path / "1" / "saved_model.pb").read_bytes()
    with pytest.raises(ValueError, match="already exists"):
        build_model("synthetic", tmp_path, fixed_ms=9.0)
    assert (tmp_path / "1" / "saved_model.pb").read_bytes() == before


def test_a_different_model_in_the_same_base_dir_is_refused(tmp_path):
    build_model("synthetic", tmp_path)
    with pytest.raises(ValueError, match="already holds model 'synthetic'"):
        build_model("synthetic", tmp_path, version=2, fixed_ms=9.0)
    with pytest.raises(ValueError, match="already holds model 'synthetic'"):
        build_model("mlp", tmp_path, version=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", MODEL_JSON]


def test_unknown_model_names_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="mlp, cnn, transformer, synthetic"):
        build_model("resnet", tmp_path)
    with pytest.raises(ValueError, match="valid models"):
        model_options("resnet")
    assert not tmp_path.joinpath("1").exists()


def test_unknown_option_names_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown option.*colour.*valid options: features, "):
        build_model("mlp", tmp_path, colour="red")


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("cnn", {"image_size": 16}, "image_size must be >= 32"),
        ("cnn", {"image_size": "big"}, "image_size must be int"),
        ("mlp", {"features": 2.5}, "features must be int"),
        ("mlp", {"features": True}, "features must be int"),
        ("synthetic", {"fixed_ms": -1}, "fixed_ms must be >= 0"),
        ("transformer", {"d_model": 30, "heads": 4}, "multiple of heads"),
    ],
)
def test_bad_option_values_are_refused(tmp_path, name, options, message):
    with pytest.raises(ValueError, match=message):
        build_model(name, tmp_path, **options)


@pytest.mark.parametrize(("keyword", "value"), [("version", -1), ("version", "2"), ("seed", -3)])
def test_bad_version_or_seed_is_refused(tmp_path, keyword, value):
    with pytest.raises(ValueError, match=keyword):
        build_model("mlp", tmp_path, **{keyword: value})


def test_string_option_values_are_converted(tmp_path):
    # The CLI passes option values as text.
    build_model("synthetic", tmp_path, features="3", fixed_ms="1.5")
    declared = json.loads((tmp_path / MODEL_JSON).read_text())
    assert declared["options"] == {"features": 3, "fixed_ms": 1.5, "per_item_ms": 0.5}
    assert declared["inputs"] == {"x": {"dtype": "float32", "shape": [-1, 3]}}


def test_model_options_lists_defaults_and_is_a_copy():
    options = model_options("synthetic")
    assert options == {"features": 4, "fixed_ms": 2.0, "per_item_ms": 0.5}
    options["features"] = 99
    assert model_options("synthetic")["features"] == 4
    assert set(model_options("transformer")) == {"vocab", "d_model", "layers", "heads"}


def test_importing_the_zoo_does_not_import_tensorflow():
    code = "import sys, harness.models.zoo; print('tensorflow' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def _run_once(version_dir: Path, x: np.ndarray) -> np.ndarray:
    with closing(load(version_dir)) as model:
        return model.run(x)


def _service_times_ms(model: Served, x: np.ndarray, runs: int) -> list[float]:
    model.run(x)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.run(x)
        times.append((time.perf_counter() - start) * 1000.0)
    return times
