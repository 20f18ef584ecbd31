"""The registry client: HTTP, TLS, auth, retries and error mapping; nothing about bundles.

``RegistryClient`` speaks the distribution API of one host, as a read and write store
(``bundler.stores``).
"""

from __future__ import annotations

from bundler.registry.client import RegistryClient
from bundler.registry.options import Backoff, RegistryOptions

__all__ = ["Backoff", "RegistryClient", "RegistryOptions"]
