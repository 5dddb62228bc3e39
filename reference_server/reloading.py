"""Background polling: base paths every --file_system_poll_wait_seconds, and the config file.

Both loops sleep on the asyncio loop and do their file-system work and model loading in a
worker thread, so requests keep being answered while a new version loads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from tensorflow_serving.config import model_server_config_pb2

from reference_server.model_registry import ModelRegistry

log = logging.getLogger(__name__)

ConfigReader = Callable[[], model_server_config_pb2.ModelServerConfig]


async def poll_file_system(registry: ModelRegistry, wait_seconds: float) -> None:
    """Re-list the base paths every ``wait_seconds`` until cancelled (TF Serving's source)."""
    while True:
        await asyncio.sleep(wait_seconds)
        try:
            await asyncio.to_thread(registry.poll)
        except Exception:  # a bad poll must not stop later ones
            log.exception("File system poll failed")


async def poll_config_file(
    registry: ModelRegistry, read_config: ConfigReader, wait_seconds: float
) -> None:
    """Re-read the model config file every ``wait_seconds`` and apply it when it changed."""
    applied = await asyncio.to_thread(read_config)
    while True:
        await asyncio.sleep(wait_seconds)
        try:
            config = await asyncio.to_thread(read_config)
            if config != applied:
                await asyncio.to_thread(registry.apply_config, config)
                applied = config
        except Exception as exc:  # keep serving the last good config, as TF Serving does
            log.error("Failed to reload the model config file: %s", exc)


def start_polling(
    registry: ModelRegistry,
    file_system_wait: float,
    config_wait: float = 0,
    read_config: ConfigReader | None = None,
) -> list[asyncio.Task]:
    """Start the loops a positive wait asks for; cancel the returned tasks to stop them."""
    tasks = []
    if file_system_wait > 0:
        tasks.append(asyncio.create_task(poll_file_system(registry, file_system_wait)))
    if config_wait > 0 and read_config is not None:
        tasks.append(asyncio.create_task(poll_config_file(registry, read_config, config_wait)))
    return tasks
