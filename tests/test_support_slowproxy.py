"""The pacing proxy leaves nothing behind when stopped: no thread, no listener, no descriptor in use."""

from __future__ import annotations

import socket
import threading

import pytest

from support.slowproxy import SlowProxy


def _address(host: str) -> tuple[str, int]:
    name, port = host.rsplit(":", 1)
    return name, int(port)


@pytest.mark.registry
def test_stop_ends_every_thread_and_releases_the_port() -> None:
    """A stopped proxy whose thread still waited in ``accept`` kept listening without a descriptor, and its
    descriptor number went to the next socket the test process opened (the session's token server)."""
    with socket.create_server(("127.0.0.1", 0)) as backend:
        proxy = SlowProxy(f"127.0.0.1:{backend.getsockname()[1]}")
        with socket.create_connection(_address(proxy.host)) as client:
            accepted, _ = backend.accept()
            client.sendall(b"ping")
            assert accepted.recv(4) == b"ping"
            proxy.stop()
            accepted.close()
    assert not [thread for thread in threading.enumerate() if thread.name == f"slowproxy-{proxy.host}"]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(_address(proxy.host), timeout=5).close()
