"""Stores: every home of images behind one read interface, and registries behind one write interface.

=================  ==========================================  =====================
home               module                                      interfaces
=================  ==========================================  =====================
a registry         ``bundler.stores.registry`` (HTTP client    ``ReadStore``,
                   in ``bundler.registry``)                    ``WriteStore``
a storage tree     ``bundler.stores.storage``                  ``ReadStore``
the blob cache     ``bundler.stores.cache`` (around a store)   ``ReadStore``
a bundle           ``bundler.stores.bundle``                   ``ReadStore``
=================  ==========================================  =====================

Only the interfaces are imported here: each home is imported by the plan that uses it, so that
reading a bundle never loads the HTTP stack.
"""

from bundler.stores.base import Placement, ReadStore, SinglePool, StorePool, WriteStore

__all__ = ["Placement", "ReadStore", "SinglePool", "StorePool", "WriteStore"]
