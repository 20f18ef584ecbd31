"""A registry over HTTP as a store: ``RegistryClient`` (``bundler.registry``) is the read and write
store of one host; ``RegistryPool`` hands one out per host to the threads of a run."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from bundler.registry import RegistryClient, RegistryOptions

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["RegistryPool"]


class RegistryPool:
    """Get-or-create one ``RegistryClient`` per registry host; thread-safe; a context manager."""

    def __init__(self, options: RegistryOptions | None = None) -> None:
        self.options = options or RegistryOptions()
        self._clients: dict[str, RegistryClient] = {}
        self._lock = threading.Lock()

    def get(self, host: str) -> RegistryClient:
        with self._lock:
            client = self._clients.get(host)
            if client is None:
                client = self._clients[host] = RegistryClient(host, self.options)
            return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
