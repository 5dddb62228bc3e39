"""BatchingParameters: TF Serving's batching knobs, with its field names and defaults."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BatchingParameters:
    """Mirror of tensorflow_serving's ``BatchingParameters`` proto (session_bundle_config.proto).

    ``None`` for ``max_execution_batch_size`` means "same as max_batch_size", as in TF Serving.
    """

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    thread_pool_name: str = "batch_threads"
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int | None = None

    @property
    def execution_batch_size(self) -> int:
        """The largest batch that is ever executed."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size:
            return self.max_execution_batch_size
        return self.max_batch_size

    def validate(self) -> None:
        """Raise ValueError with TF's wording where the combination is invalid."""
        checks = (
            (
                self.max_batch_size > 0,
                f"max_batch_size must be positive; was {self.max_batch_size}",
            ),
            (
                self.num_batch_threads > 0,
                f"num_batch_threads must be positive; was {self.num_batch_threads}",
            ),
            # TF silently treats 0 as 1 without splitting, so only negatives are refused.
            (
                self.max_enqueued_batches >= 0,
                f"max_enqueued_batches must be positive; was {self.max_enqueued_batches}",
            ),
            (
                self.batch_timeout_micros >= 0,
                f"batch_timeout_micros must be non-negative; was {self.batch_timeout_micros}",
            ),
            (
                not self.enable_large_batch_splitting
                or self.max_batch_size >= self.execution_batch_size,
                "When enable_large_batch_splitting is true, input_batch_size_limit must be greater "
                "than or equal to max_execution_batch_size.",
            ),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        self._validate_allowed_sizes()

    def _validate_allowed_sizes(self) -> None:
        sizes = self.allowed_batch_sizes
        if not sizes:
            return
        if any(b <= a for a, b in itertools.pairwise(sizes)):
            raise ValueError("allowed_batch_sizes entries must be monotonically increasing")
        if sizes[-1] != self.execution_batch_size:
            raise ValueError(
                "Last entry in allowed_batch_sizes must match max_batch_size; last "
                f"entry was {sizes[-1]}; expected {self.execution_batch_size}"
            )
