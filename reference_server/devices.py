"""Which device the models run on, and the GPU memory options of their sessions.

TF Serving puts ``--per_process_gpu_memory_fraction`` into every session's
``ConfigProto.gpu_options`` (server.cc) and nothing else, so at the default 0 TensorFlow's
allocator claims almost all of the GPU's memory and a second server process on the same GPU
fails. We set ``allow_growth`` when the fraction is 0, so N replicas can share one GPU, each
taking only what its models use; a fraction above 0 caps each process as in TF Serving.

A session places ops on ``GPU:0`` whenever TensorFlow sees a GPU (soft placement falls back to
the CPU for ops without a GPU kernel), so the first visible GPU is the device reported.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import tensorflow as tf
from tensorflow.core.protobuf import config_pb2

log = logging.getLogger(__name__)

GPU = "GPU"
CPU = "CPU"


@dataclass(frozen=True)
class DeviceReport:
    """The device serving runs on: ``device`` as TensorFlow names it (``GPU:0``, ``CPU``),
    ``kind`` (``GPU`` or ``CPU``) and a human description (the GPU's model name)."""

    device: str
    kind: str
    description: str = ""

    def log_text(self) -> str:
        """E.g. ``GPU:0 (NVIDIA H100 80GB HBM3)`` or ``CPU``."""
        return f"{self.device} ({self.description})" if self.description else self.device


def gpu_options(per_process_gpu_memory_fraction: float) -> config_pb2.GPUOptions:
    """GPUOptions for ``--per_process_gpu_memory_fraction``: the fraction as given (TF Serving's
    setting), and memory growth when it is 0 (our choice: replicas can share a GPU).

    Raises ValueError for a negative or non-finite fraction; above 1 is TensorFlow's unified
    memory oversubscription and is passed on as TF Serving does.
    """
    fraction = per_process_gpu_memory_fraction
    if not math.isfinite(fraction) or fraction < 0:
        raise ValueError(
            f"--per_process_gpu_memory_fraction={fraction}: expected 0 (grow as needed) "
            "or a fraction of the GPU's memory above 0, e.g. 0.5"
        )
    options = config_pb2.GPUOptions(per_process_gpu_memory_fraction=fraction)
    if fraction == 0:
        options.allow_growth = True
    return options


def discover_device() -> DeviceReport:
    """The device a session's ops go to: the first GPU TensorFlow sees, else the CPU.

    Only lists physical devices, which does not initialise the GPU runtime, so the sessions'
    GPU options (created later) still decide how memory is claimed.
    """
    gpus = tf.config.list_physical_devices(GPU)
    if not gpus:
        return DeviceReport(CPU, CPU)
    return DeviceReport(f"{GPU}:0", GPU, _gpu_name(gpus[0]))


def allow_memory_growth(per_process_gpu_memory_fraction: float) -> None:
    """Turn on memory growth for every GPU in TensorFlow's eager context too (fraction 0).

    The process-wide GPU allocator is made by whichever of the eager context or the first
    session touches the GPU first; this keeps it growing even if an eager op comes first.
    """
    if per_process_gpu_memory_fraction != 0:
        return
    for gpu in tf.config.list_physical_devices(GPU):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # the GPU runtime is already initialised: sessions still grow
            log.debug("memory growth not set on %s: already initialised", gpu.name)


def _gpu_name(gpu: tf.config.PhysicalDevice) -> str:
    try:
        details = tf.config.experimental.get_device_details(gpu)
    except (ValueError, RuntimeError):  # details are best effort; the device is what matters
        return ""
    return str(details.get("device_name", ""))
