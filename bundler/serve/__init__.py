"""``serve``: bundles as a read-only registry, read straight from the compressed files.

Start-up reads each bundle's index and seek table and nothing more; every manifest and blob is
read from its frames when a client asks for it. ``view`` names what is served, ``http`` answers
the distribution API, ``server`` is the bounded HTTP server, ``auth`` checks htpasswd users.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

from bundler.bundle.index import bundle_id
from bundler.bundle.volumes import BundleFiles
from bundler.errors import BundleError, CorruptBundleError
from bundler.serve.server import RegistryServer, ServeSettings, parse_listen
from bundler.serve.view import Naming, ServedView
from bundler.stores.bundle import BundleStore

__all__ = ["Naming", "RegistryServer", "ServeSettings", "ServedView", "open_view", "parse_listen", "serve", "verify_all"]

log = logging.getLogger("bundler.serve")


def open_view(stack: ExitStack, bundles: Sequence[Path | BundleFiles], naming: Naming) -> ServedView:
    """Open every bundle (closed with ``stack``) and the view over them; warns of a delta served without its base."""
    stores = []
    for bundle in bundles:
        try:
            stores.append(stack.enter_context(BundleStore.open(bundle, page_cache=True)))  # many clients, same blobs
        except BundleError as error:
            raise error.reworded(f"{bundle}: {error}") from error
    served = {bundle_id(store.index) for store in stores}
    for bundle, store in zip(bundles, stores):
        base = store.index.base
        if base and base not in served:
            log.warning("%s is a delta whose base %s is not served: the %d blobs it leaves to its base "
                        "will be unknown", bundle, base, len(store.index.external))
    return ServedView(stores, naming)


def verify_all(bundles: Sequence[Path | BundleFiles]) -> None:
    """Prove every bundle whole before serving it (``CorruptBundleError`` naming the broken images)."""
    from bundler.verify import verify_bundle

    for bundle in bundles:
        report = verify_bundle(bundle)
        if not report.ok:
            raise CorruptBundleError(f"{bundle}: {len(report.problems)} problem(s); {report.broken_summary()}")


def serve(bundles: Sequence[Path | BundleFiles], naming: Naming, settings: ServeSettings,
          ready: Callable[[RegistryServer], None]) -> None:
    """Serve until interrupted (KeyboardInterrupt or our ``Interrupted`` from a signal), then stop cleanly."""
    with ExitStack() as stack:
        view = open_view(stack, bundles, naming)
        server = RegistryServer(view, settings)
        stack.callback(server.stop)
        ready(server)
        server.serve_forever(poll_interval=0.5)
