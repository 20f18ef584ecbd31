"""The registry client: HTTP, TLS, auth, retries and error mapping; nothing about bundles.

``RegistryClient`` speaks the distribution API of one host; ``RegistryPool`` hands out one client
per host to the threads of a run and closes them all at the end.
"""

from __future__ import annotations

import threading

from bundler.registry.client import MOUNTED, UPLOADED, RegistryClient
from bundler.registry.options import Backoff, RegistryOptions

__all__ = ["RegistryClient", "RegistryOptions", "RegistryPool", "Backoff", "MOUNTED", "UPLOADED"]


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

    def __enter__(self) -> "RegistryPool":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
