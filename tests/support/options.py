"""RegistryOptions for tests: retries that cost little, and never this machine's docker or podman credentials."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bundler.registry import Backoff, RegistryOptions
from support.registry import RunningRegistry

__all__ = ["FAST", "NOWHERE", "fast_options", "offline_options", "registry_options"]

NOWHERE = Path("/nonexistent/imgbundle-tests")
"""Where the options look for a docker config, an auth file or certs.d: a path that does not exist."""
FAST = Backoff(initial=0.001, factor=2, maximum=0.005)


def offline_options(**settings: Any) -> RegistryOptions:
    """Options with the ``FAST`` backoff that read no credentials of this machine; ``settings`` override.

    Retries stop after ``retries`` whatever the progress (``retry_timeout`` 0): tests that need patience ask."""
    defaults: dict[str, Any] = {"backoff": FAST, "docker_config_dir": NOWHERE, "auth_file": NOWHERE / "auth.json",
                                "retry_timeout": 0.0}
    return RegistryOptions(**{**defaults, **settings})


def registry_options(reg: RunningRegistry, **settings: Any) -> RegistryOptions:
    """Options for ``reg``: its CA and credentials, two retries with a backoff that lets a loaded registry settle."""
    credentials = {reg.host: (reg.username, reg.password)} if reg.username and reg.password else {}
    return offline_options(ca_file=reg.ca_file, credentials=credentials, retries=2,
                           backoff=Backoff(initial=0.01, maximum=0.05), **settings)


def fast_options(**settings: Any) -> RegistryOptions:
    """For runs through a FaultProxy: a tiny backoff, a read timeout short enough for stalls to cost little,
    enough retries for bad luck."""
    return offline_options(**{"backoff": Backoff(initial=0.001, maximum=0.01), "read_timeout": 0.5,
                              "connect_timeout": 2.0, "retries": 6, "retry_after_max": 0.01, **settings})
