"""Delta bundles (format 1.1): the index names a base bundle and the blobs left to it.

The member layout is that of any bundle; only ``imgbundle.json`` gains ``base`` and ``external``
(offsets count from the end of that member, so a longer index moves nothing).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import msgspec

from bundler.bundle.index import DELTA_VERSION, ExternalEntry, decode_index, encode_index
from bundler.bundle.layout import BlobSpec, BundlePlan
from bundler.errors import BundleError, InputError

__all__ = ["delta_plan"]


def delta_plan(plan: BundlePlan, base: str, external: Sequence[BlobSpec]) -> BundlePlan:
    """``plan`` as a delta of the bundle whose id is ``base``, expecting ``external`` at the target.

    ``InputError`` (the caller's bug) when the result is not a valid index, e.g. a blob both
    carried and external.
    """
    unique = {spec.digest: spec for spec in external}
    entries = [ExternalEntry(digest=d, size=unique[d].size, media_type=unique[d].media_type) for d in sorted(unique)]
    index = msgspec.structs.replace(plan.index, version=DELTA_VERSION, base=base, external=entries)
    data = encode_index(index)
    try:
        index = decode_index(data)
    except BundleError as error:
        raise InputError(f"cannot build a valid delta bundle index: {error}") from None
    return dataclasses.replace(plan, index=index, index_bytes=data)
