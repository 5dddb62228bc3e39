"""Which model versions exist, their lifecycle state, and lookup by name/version/label.

Mirrors TF Serving's ServerCore + AspiredVersionsManager closely enough that clients see the
same states, labels and NOT_FOUND messages. Loading happens here; serving happens elsewhere.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from tensorflow_serving.config import model_server_config_pb2

from reference_server.errors import (
    ServingError,
    code_from_canonical,
    failed_precondition,
    invalid_argument,
    not_found,
)
from reference_server.servable import Servable, SessionOptions
from reference_server.version_lifecycle import VersionState, plan_versions

log = logging.getLogger(__name__)


@dataclass
class VersionRecord:
    """One version's lifecycle: state, the error that ended it (if any), and the servable."""

    version: int
    path: Path
    state: VersionState = VersionState.START
    error: ServingError | None = None
    servable: Servable | None = None


@dataclass
class ModelRecord:
    name: str
    base_path: Path
    config: model_server_config_pb2.ModelConfig
    versions: dict[int, VersionRecord] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    configured: bool = True  # False once a reload dropped the model: its versions are unloaded

    def states(self) -> dict[int, VersionState]:
        return {v: e.state for v, e in self.versions.items()}

    def failed(self) -> set[int]:
        return {v for v, e in self.versions.items() if e.error is not None}


def list_version_dirs(base_path: Path) -> dict[int, Path]:
    """Numeric sub-folders of a base path, as TF Serving's file-system source sees them."""
    if not base_path.is_dir():
        return {}
    return {int(p.name): p for p in base_path.iterdir() if p.is_dir() and p.name.isdigit()}


def select_versions(policy: model_server_config_pb2.ModelConfig, found: Iterable[int]) -> list[int]:
    """The versions a ModelConfig's model_version_policy asks for, among those on disk."""
    available = sorted(found)
    choice = policy.model_version_policy.WhichOneof("policy_choice")
    if choice == "all":
        return available
    if choice == "specific":
        wanted = set(policy.model_version_policy.specific.versions)
        return [v for v in available if v in wanted]
    num = policy.model_version_policy.latest.num_versions if choice == "latest" else 1
    return available[-max(num, 1) :]


ServableFactory = Callable[[str, int, Path], Servable]


class ModelRegistry:
    """Loads the models of a ModelServerConfig and answers lookups; thread-safe."""

    def __init__(
        self,
        session_options: SessionOptions,
        factory: ServableFactory | None = None,
        *,
        allow_version_labels_for_unavailable_models: bool = False,
    ) -> None:
        self._factory = factory or (lambda n, v, p: Servable(n, v, p, session_options))
        self._models: dict[str, ModelRecord] = {}
        self._lock = threading.RLock()  # guards the records; held only for short updates
        # One reconciliation (poll or reload) at a time; loads run outside ``_lock``.
        self._reconcile_lock = threading.Lock()
        self._allow_unavailable_labels = allow_version_labels_for_unavailable_models

    # -- loading -----------------------------------------------------------------------------

    def load_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Load every model the config lists (blocking); a version that fails is recorded.

        Labels that point at a version that is not AVAILABLE are logged and skipped, so a
        server still starts.
        """
        with self._reconcile_lock:
            self._adopt(config)
            self._reconcile_all()
            for record in self._configured():
                self._apply_labels(record)

    def apply_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Switch to a new ModelServerConfig at run time (HandleReloadConfigRequest).

        Labels are checked against the versions AVAILABLE now, before anything changes, as TF
        Serving's ServerCore does; a bad label raises FAILED_PRECONDITION and leaves the
        current config in place. Then new models and versions are loaded, dropped ones
        unloaded (availability-preserving) and the labels replaced.
        """
        if config.WhichOneof("config") != "model_config_list":
            raise invalid_argument(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                "Only ModelConfigList is currently supported"
            )
        with self._reconcile_lock:
            self._check_labels(config)
            self._adopt(config)
            self._reconcile_all()
            for record in self._configured():
                self._apply_labels(record)

    def poll(self) -> None:
        """Re-list every configured base path and load/unload versions to match (blocking)."""
        with self._reconcile_lock:
            self._reconcile_all()

    def _adopt(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Make ``config`` the configured set of models; records of dropped ones stay (END)."""
        wanted = {c.name: c for c in config.model_config_list.config}
        with self._lock:
            for name, known in self._models.items():
                known.configured = name in wanted
            for name, model_config in wanted.items():
                record = self._models.get(name)
                if record is None:
                    record = self._models[name] = ModelRecord(
                        name, Path(model_config.base_path), model_config
                    )
                record.config, record.base_path = model_config, Path(model_config.base_path)
                record.configured = True

    def _configured(self) -> list[ModelRecord]:
        with self._lock:
            return [r for r in self._models.values() if r.configured]

    def _reconcile_all(self) -> None:
        with self._lock:
            records = list(self._models.values())
        for record in records:
            self._reconcile(record)

    def _reconcile(self, record: ModelRecord) -> None:
        """Load the aspired versions not held, then unload what is no longer needed."""
        found = list_version_dirs(record.base_path) if record.configured else {}
        if record.configured and not found:
            log.warning(
                "No versions of servable %s found under base path %s", record.name, record.base_path
            )
        aspired = select_versions(record.config, found) if record.configured else []
        with self._lock:
            plan = plan_versions(aspired, record.states(), record.failed())
        for version in plan.load:
            self._load_version(record, VersionRecord(version, found[version]))
        with self._lock:  # after the loads: unloading depends on what became AVAILABLE
            plan = plan_versions(aspired, record.states(), record.failed())
        for version in plan.unload:
            self._unload_version(record, version)

    def _load_version(self, record: ModelRecord, entry: VersionRecord) -> None:
        with self._lock:
            record.versions[entry.version] = entry
            entry.state = VersionState.LOADING
        log.info("Loading servable: {name: %s version: %d}", record.name, entry.version)
        try:
            servable = self._factory(record.name, entry.version, entry.path)
        except Exception as exc:  # any load failure ends this version, never the server
            log.error(
                "Loading servable: {name: %s version: %d} failed: %s",
                record.name,
                entry.version,
                exc,
            )
            with self._lock:
                entry.state = VersionState.END
                entry.error = _load_error(exc)
            return
        with self._lock:
            entry.servable = servable
            entry.state = VersionState.AVAILABLE
        log.info(
            "Successfully loaded servable version {name: %s version: %d}",
            record.name,
            entry.version,
        )

    def _unload_version(self, record: ModelRecord, version: int) -> None:
        """Stop routing to a version; its session closes once in-flight requests let go.

        Requests that resolved the servable before this keep a reference to it, so the
        session is left to the garbage collector instead of being closed under them.
        """
        with self._lock:
            entry = record.versions[version]
            entry.state = VersionState.UNLOADING
        log.info("Unloading servable version {name: %s version: %d}", record.name, version)
        with self._lock:
            entry.servable = None
            entry.state = VersionState.END
        log.info("Done unloading servable version {name: %s version: %d}", record.name, version)

    def _check_labels(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        if self._allow_unavailable_labels:
            return
        with self._lock:
            for model_config in config.model_config_list.config:
                record = self._models.get(model_config.name)
                states = record.states() if record is not None else {}
                for version in model_config.version_labels.values():
                    if states.get(version) != VersionState.AVAILABLE:
                        raise failed_precondition(_label_message(version, model_config.name))

    def _apply_labels(self, record: ModelRecord) -> None:
        labels = dict(record.config.version_labels) if record.configured else {}
        chosen: dict[str, int] = {}
        with self._lock:
            states = record.states()
        for label, version in labels.items():
            if states.get(version) != VersionState.AVAILABLE and not self._allow_unavailable_labels:
                log.error("%s", _label_message(version, record.name))
                continue
            chosen[label] = version
        with self._lock:
            record.labels = chosen

    def close(self) -> None:
        with self._lock:
            entries = [e for m in self._models.values() for e in m.versions.values()]
        for entry in entries:
            if entry.servable is not None:
                entry.servable.close()
                entry.servable = None
            entry.state = VersionState.END

    # -- lookup ------------------------------------------------------------------------------

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable for a ModelSpec: latest AVAILABLE, a specific version, or a label."""
        with self._lock:
            record = self._models.get(name)
            if label:
                version = self.label_version(name, label)
            if record is not None:
                servable = self._available(record, version)
                if servable is not None:
                    return servable
        request = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
        raise not_found(f"Servable not found for request: {request}")

    def label_version(self, name: str, label: str) -> int:
        """The version a label points at, or TF Serving's INVALID_ARGUMENT."""
        with self._lock:
            record = self._models.get(name)
            if record is None or label not in record.labels:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            return record.labels[label]

    @staticmethod
    def _available(record: ModelRecord, version: int | None) -> Servable | None:
        ready = {
            v: e.servable
            for v, e in record.versions.items()
            if e.state == VersionState.AVAILABLE and e.servable is not None
        }
        if version is None:
            return ready[max(ready)] if ready else None
        return ready.get(version)

    def version_records(self, name: str, version: int | None = None) -> list[VersionRecord]:
        """Status of every version (or one), newest first, with TF Serving's NOT_FOUND text."""
        with self._lock:
            record = self._models.get(name)
            if record is None or not record.versions:
                raise not_found(f"Could not find any versions of model {name}")
            if version is None:
                return [record.versions[v] for v in sorted(record.versions, reverse=True)]
            if version not in record.versions:
                raise not_found(f"Could not find version {version} of model {name}")
            return [record.versions[version]]

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def servables(self) -> list[Servable]:
        """Every AVAILABLE servable (for warm-up, metrics and shutdown)."""
        with self._lock:
            return [
                e.servable
                for m in self._models.values()
                for e in m.versions.values()
                if e.state == VersionState.AVAILABLE and e.servable is not None
            ]


def _label_message(version: int, name: str) -> str:
    return (
        f"Request to assign label to version {version} of model {name}, "
        "which is not currently available for inference"
    )


def _load_error(exc: Exception) -> ServingError:
    if isinstance(exc, ServingError):
        return exc
    code = getattr(exc, "error_code", None)
    if isinstance(code, int):
        return ServingError(code_from_canonical(code), getattr(exc, "message", str(exc)))
    return ServingError(grpc.StatusCode.UNKNOWN, str(exc))
