"""The suite's shared fixtures are plugin modules of the tests/support package; the session's blob caches are here.

``pytest -m "not registry"`` runs the fast, self-contained tests: support/servers.py says which tests start
registries or other servers, and fails any test that starts one without saying so.
"""

import hashlib
import os

import pytest

pytest_plugins = ["support.servers", "support.registry", "support.images", "support.sources", "support.faults",
                  "support.referrers_api"]


@pytest.fixture(autouse=True, scope="session")
def _session_blob_cache(tmp_path_factory: pytest.TempPathFactory):
    """No test, module fixture or ``imgbundle`` subprocess ever touches the user's real blob cache."""
    saved = os.environ.get("IMGBUNDLE_CACHE_DIR")
    os.environ["IMGBUNDLE_CACHE_DIR"] = str(tmp_path_factory.getbasetemp() / "blob-cache-session")
    yield
    if saved is None:
        os.environ.pop("IMGBUNDLE_CACHE_DIR", None)
    else:
        os.environ["IMGBUNDLE_CACHE_DIR"] = saved


@pytest.fixture(autouse=True)
def _private_blob_cache(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory,
                        request: pytest.FixtureRequest) -> None:
    """Each test its own blob cache, so that blobs cached by one test never hide another's registry faults."""
    name = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:16]
    monkeypatch.setenv("IMGBUNDLE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "blob-caches" / name))
