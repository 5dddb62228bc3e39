"""Shipped sweep specs: ``default`` (what ``batchbench demo`` runs), ``ci`` (regression runs) and
``bursty`` (bursty arrivals and a rows mix against padding).

Each preset is a YAML file beside this module; ``harness.plan.spec.load_preset(name)`` validates it.
"""

from __future__ import annotations

from pathlib import Path

PRESETS_DIR = Path(__file__).resolve().parent


def preset_names() -> tuple[str, ...]:
    """The names of the shipped presets, sorted."""
    return tuple(sorted(path.stem for path in PRESETS_DIR.glob("*.yaml")))


def preset_path(name: str) -> Path:
    """The YAML file of preset ``name`` (it may not exist: check ``preset_names()``)."""
    return PRESETS_DIR / f"{name}.yaml"
