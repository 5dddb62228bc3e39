"""Built-in models to benchmark: `batchbench make-model NAME DIR`.

Each model is written as a TF Serving style SavedModel, `DIR/<version>/saved_model.pb`, with one
`serving_default` signature whose dimension 0 is the batch (size -1), plus `DIR/model.json` that
declares what was built (name, resolved options, input and output specs) so the harness can read
the truth later without loading TensorFlow.

This module does not import TensorFlow: the CLI imports `harness` and must start fast, so the
TensorFlow half lives in `harness.models.graphs` and is imported only when a model is built.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from harness.store.schema import schema_problem

MODEL_NAMES: tuple[str, ...] = ("mlp", "cnn", "transformer", "synthetic")
MODEL_JSON = "model.json"
SCHEMA_VERSION = 1

# Option names and defaults per model; the type of the default is the option's type.
_DEFAULTS: dict[str, dict[str, int | float]] = {
    "mlp": {"features": 16, "hidden": 64, "outputs": 1},
    "cnn": {"image_size": 224, "classes": 1000},
    "transformer": {"vocab": 1000, "d_model": 64, "layers": 2, "heads": 4},
    "synthetic": {"features": 4, "fixed_ms": 2.0, "per_item_ms": 0.5},
}

# Smallest accepted value; options not listed here must be >= 1.
# MobileNetV2 refuses images smaller than 32x32.
_MINIMUM: dict[str, int | float] = {"image_size": 32, "fixed_ms": 0.0, "per_item_ms": 0.0}

_DESCRIPTIONS: dict[str, str] = {
    "mlp": "tiny two-layer perceptron, overhead-bound",
    "cnn": "MobileNetV2 image classifier, compute-bound",
    "transformer": "small encoder over variable-length int32 token ids, mean-pooled",
    "synthetic": "sleeps fixed_ms + per_item_ms * batch rows, returns row sums",
}

_MAX_SEED = 2**31 - 1


def model_options(name: str) -> dict[str, object]:
    """Return the option names of model `name` with their defaults (a fresh dict)."""
    return dict(_DEFAULTS[_check_name(name)])


def describe_model(name: str) -> str:
    """Return a one-line description of model `name`, for `--help` texts."""
    return _DESCRIPTIONS[_check_name(name)]


def resolve_options(name: str, options: dict[str, Any]) -> dict[str, int | float]:
    """Return all options of `name` with defaults filled in and values coerced to their types.

    Values may be strings (as from a command line). Raises ValueError for an unknown model, an
    unknown option (naming the valid ones) or a value of the wrong type or out of range.
    """
    defaults = _DEFAULTS[_check_name(name)]
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for model {name!r}; "
            f"valid options: {', '.join(defaults)}"
        )
    resolved = {
        key: _coerce(key, options.get(key, default), default) for key, default in defaults.items()
    }
    _check_consistent(resolved)
    return resolved


def model_signature(name: str, options: dict[str, Any] | None = None) -> dict[str, dict]:
    """Return the `serving_default` signature a build of `name` will have, without building.

    `{"inputs": {alias: {"dtype": "float32", "shape": [-1, 16]}}, "outputs": {...}}`; -1 marks
    a dimension of any size (dimension 0 is always the batch), as in a SignatureDef.
    """
    opts = resolve_options(name, options or {})
    if name == "mlp":
        return _spec(
            ("x", "float32", [-1, int(opts["features"])]),
            ("y", "float32", [-1, int(opts["outputs"])]),
        )
    if name == "cnn":
        size = int(opts["image_size"])
        return _spec(
            ("image", "float32", [-1, size, size, 3]),
            ("probabilities", "float32", [-1, int(opts["classes"])]),
        )
    if name == "transformer":
        embedding = [-1, int(opts["d_model"])]
        return _spec(("tokens", "int32", [-1, -1]), ("embedding", "float32", embedding))
    return _spec(("x", "float32", [-1, int(opts["features"])]), ("y", "float32", [-1, 1]))


def build_model(
    name: str,
    base_dir: Path,
    *,
    version: int = 1,
    seed: int = 0,
    warmup_records: int = 0,
    **options: Any,
) -> Path:
    """Write model `name` as the SavedModel `base_dir/<version>/`; return that version folder.

    Weights are random, drawn from `seed` (the same seed gives the same weights). The version
    folder appears atomically (built under a hidden name, then renamed), so a server polling
    `base_dir` never sees half a model. `base_dir/model.json` declares name, options and
    signature; building another version into a base dir that holds a different model or
    options is refused. Raises ValueError for bad arguments or an existing version folder.
    Building the cnn seeds Python's, NumPy's and TensorFlow's global random generators.
    ``warmup_records`` > 0 also writes TF Serving's warm-up file into the version
    (``assets.extra/tf_serving_warmup_requests``: that many one-row Predict requests of
    random data), before the folder appears.
    """
    resolved = resolve_options(name, options)
    _check_version_and_seed(version, seed)
    base_dir = Path(base_dir)
    target = base_dir / str(version)
    if target.exists():
        raise ValueError(f"{target} already exists; choose another version or base dir")
    declared = _declaration(name, resolved)
    if warmup_records:
        _check_warmup_records(warmup_records)
    _check_same_model(base_dir, declared)
    base_dir.mkdir(parents=True, exist_ok=True)
    _build_atomically(name, resolved, seed, target, declared, warmup_records)
    _write_json_atomically(base_dir / MODEL_JSON, declared)
    return target


def read_model_json(base_dir: Path) -> dict[str, Any]:
    """Return the declaration `build_model` wrote in `base_dir`; ValueError if it has no
    schema version or a newer one."""
    path = Path(base_dir) / MODEL_JSON
    data = json.loads(path.read_text())
    if problem := schema_problem(data, path, SCHEMA_VERSION):
        raise ValueError(problem)
    return data


def _check_name(name: str) -> str:
    if name not in _DEFAULTS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    return name


def _coerce(key: str, value: Any, default: int | float) -> int | float:
    """Convert `value` to the type of `default` and check its minimum."""
    kind = type(default)
    try:
        if isinstance(value, bool):
            raise TypeError
        if kind is int and isinstance(value, float):
            if not value.is_integer():
                raise ValueError
            value = int(value)
        converted = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"option {key} must be {kind.__name__}, got {value!r}") from None
    minimum = _MINIMUM.get(key, 1)
    if converted < minimum:
        raise ValueError(f"option {key} must be >= {minimum}, got {converted}")
    return converted


def _check_consistent(opts: dict[str, int | float]) -> None:
    if "heads" in opts and opts["d_model"] % opts["heads"]:
        raise ValueError(
            f"option d_model ({opts['d_model']}) must be a multiple of heads ({opts['heads']})"
        )


def _check_version_and_seed(version: int, seed: int) -> None:
    # TF Serving only serves folders named by a non-negative integer.
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"version must be a non-negative integer, got {version!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, {_MAX_SEED}], got {seed!r}")


def _spec(inp: tuple[str, str, list[int]], out: tuple[str, str, list[int]]) -> dict[str, dict]:
    def one(alias: str, dtype: str, shape: list[int]) -> dict[str, dict]:
        return {alias: {"dtype": dtype, "shape": [int(d) for d in shape]}}

    return {"inputs": one(*inp), "outputs": one(*out)}


def _declaration(name: str, opts: dict[str, int | float]) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "options": opts,
        **model_signature(name, opts),
    }


def _check_same_model(base_dir: Path, declared: dict[str, Any]) -> None:
    """Refuse to mix models: one base dir is one served model, described by one model.json."""
    path = base_dir / MODEL_JSON
    if not path.exists():
        return
    existing = read_model_json(base_dir)
    ours = {key: declared[key] for key in ("name", "options")}
    theirs = {key: existing.get(key) for key in ("name", "options")}
    if ours != theirs:
        raise ValueError(
            f"{base_dir} already holds model {theirs['name']!r} with options {theirs['options']}; "
            f"use another base dir for {ours['name']!r} with options {ours['options']}"
        )


def _check_warmup_records(records: int) -> None:
    from harness.models.warmup_file import MAX_RECORDS

    if isinstance(records, bool) or not isinstance(records, int) or not 0 <= records <= MAX_RECORDS:
        raise ValueError(
            f"warmup_records must be an integer in [0, {MAX_RECORDS}], got {records!r}"
        )


def _build_atomically(
    name: str,
    opts: dict[str, int | float],
    seed: int,
    target: Path,
    declared: dict[str, Any],
    warmup_records: int = 0,
) -> None:
    # Imported here: it imports TensorFlow, which costs seconds the CLI should not pay. Its
    # C++ start-up chatter (no CUDA driver, CPU features) says nothing about the model.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from harness.models import graphs as model_zoo_graphs

    # A dot-name is not a number, so TF Serving's version poller ignores the folder meanwhile.
    scratch = Path(tempfile.mkdtemp(prefix=f".building-{target.name}-", dir=target.parent))
    try:
        model_zoo_graphs.save_model(name, opts, seed, scratch / "model")
        if warmup_records:
            from harness.models.warmup_file import write_for_declared_model

            write_for_declared_model(scratch / "model", declared, warmup_records, seed=seed)
        os.rename(scratch / "model", target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(scratch, path)


def model_folder(name: str, options: dict[str, Any] | None = None) -> str:
    """The folder name ``ensure_model`` uses: ``name`` for the default options,
    ``name-<hash of the options>`` otherwise."""
    resolved = resolve_options(name, dict(options or {}))
    if resolved == resolve_options(name, {}):
        return name
    digest = hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:8]
    return f"{name}-{digest}"


def ensure_model(models_dir: Path, name: str, options: dict[str, Any] | None = None) -> Path:
    """The base path of built-in model ``name`` with ``options``, built on first use.

    Each distinct set of options gets its own base dir (``mlp`` for the defaults,
    ``mlp-<hash>`` otherwise), so sweeps with different options never share a model.
    """
    resolved: dict[str, Any] = resolve_options(name, dict(options or {}))
    base = Path(models_dir) / model_folder(name, resolved)
    if not any(p.name.isdigit() for p in base.glob("*")):
        build_model(name, base, **resolved)
    return base
