"""The ``registry`` marker: which tests start servers, so that ``pytest -m "not registry"`` runs only the fast,
self-contained ones (a pytest plugin: conftest lists it in pytest_plugins).

A test is marked when a fixture it uses, directly or through other fixtures, is declared with
``@starts_server``; a test that starts a server in its own body carries ``@pytest.mark.registry``.

The rule cannot silently miss a test: while a test without the marker runs, starting a server program
(``SERVER_PROGRAMS``, seen by an audit hook on every subprocess this process starts) or a token server fails
it, at the start and again at its teardown (in case the start happened in a thread whose error was lost).
A test process's children are out of the hook's sight: a test that runs a script which starts servers
(the demo, the benchmark) is marked by hand.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Generator
from typing import Any, TypeVar

import pytest

from localregistry import REGISTRY_BINARY

__all__ = ["MARKER", "SERVER_PROGRAMS", "refuse_unless_marked", "starts_server"]

MARKER = "registry"
SERVER_PROGRAMS = frozenset({os.path.basename(REGISTRY_BINARY), "skopeo", "containerd"})
"""Programs that serve (or, for skopeo, talk to) registries: slow to start, and not self-contained."""

FixtureFunction = TypeVar("FixtureFunction", bound=Callable[..., Any])

_running: pytest.Item | None = None
_audit_added = False
_violations: dict[str, list[str]] = {}
"""By test node id: what a test without the marker started."""


def starts_server(fixture_function: FixtureFunction) -> FixtureFunction:
    """Declare that a fixture starts a server; put it under ``@pytest.fixture``. Every test that uses the
    fixture, however indirectly, is marked ``registry``."""
    fixture_function.starts_server = True  # type: ignore[attr-defined]
    return fixture_function


def refuse_unless_marked(what: str) -> None:
    """Fail the running test if it lacks the marker: it is about to start ``what``."""
    item = _running
    if item is None or item.get_closest_marker(MARKER) is not None:
        return
    message = (f"{item.nodeid} starts {what} but is not marked {MARKER!r}: declare its fixture with "
               f"@starts_server (tests/support/servers.py) or mark the test @pytest.mark.{MARKER}")
    _violations.setdefault(item.nodeid, []).append(message)
    pytest.fail(message, pytrace=False)


def _uses_server_fixture(item: pytest.Function) -> bool:
    # name2fixturedefs covers the whole fixture closure: pytest's internal map, but a long-stable one
    definitions = item._fixtureinfo.name2fixturedefs.values()
    return any(getattr(d.func, "starts_server", False) for defs in definitions for d in defs)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "subprocess.Popen":
        program = os.path.basename(os.fsdecode(args[0]))
        if program in SERVER_PROGRAMS:
            refuse_unless_marked(f"{program} (a subprocess)")


def pytest_configure(config: pytest.Config) -> None:
    global _audit_added
    if not _audit_added:  # an audit hook cannot be removed: one for the life of the process
        sys.addaudithook(_audit)
        _audit_added = True


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and _uses_server_fixture(item):
            item.add_marker(MARKER)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    global _running
    _running = item
    try:
        return (yield)
    finally:
        _running = None


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    broken = _violations.pop(item.nodeid, [])
    if broken:
        pytest.fail("\n".join(broken), pytrace=False)
