"""A registry with the OCI 1.1 referrers API: a stub in front of a real Distribution 2.8 (a pytest plugin).

Distribution 2.8 has no referrers API. This stub (on ``FaultProxy``'s forwarding) forwards everything,
and for every manifest PUT that the registry accepted whose body has a ``subject`` it answers with the
``OCI-Subject`` header and remembers the referrer; ``GET /v2/NAME/referrers/DIGEST`` lists them (an OCI
index, ``artifactType`` filter honoured with ``OCI-Filters-Applied``), as Harbor 2.8+ and Distribution 3 do.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from support.faults import Answer, FaultProxy, Forward, Rule, Seen
from support.registry import RunningRegistry

__all__ = ["ReferrersApi", "referrers_api"]

_MANIFEST_PUT = r"^/v2/(.+)/manifests/([^/?]+)$"
_REFERRERS = r"^/v2/(.+)/referrers/(sha256:[a-f0-9]{64})"


class ReferrersApi:
    """The referrers index the stub keeps: (repository, subject) -> descriptors, in push order."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.host = proxy.host
        self.index: dict[tuple[str, str], dict[str, dict]] = {}
        self._lock = threading.Lock()
        proxy.rules += [Rule("PUT", _MANIFEST_PUT, answer=self._put), Rule("GET", _REFERRERS, answer=self._list)]

    def _put(self, seen: Seen, forward: Forward) -> Answer:
        answer = forward()
        match = re.match(_MANIFEST_PUT, urlsplit(seen.path).path)
        try:
            document = json.loads(seen.body)
        except ValueError:
            return answer
        subject = document.get("subject", {}).get("digest") if isinstance(document, dict) else None
        if answer.status != 201 or not subject or match is None:
            return answer
        descriptor = {"mediaType": document.get("mediaType", ""), "digest": "sha256:"
                      + hashlib.sha256(seen.body).hexdigest(), "size": len(seen.body),
                      "artifactType": document.get("artifactType") or document.get("config", {}).get("mediaType", "")}
        if document.get("annotations"):
            descriptor["annotations"] = document["annotations"]
        with self._lock:
            self.index.setdefault((match.group(1), subject), {})[descriptor["digest"]] = descriptor
        return answer.with_header("OCI-Subject", subject)

    def _list(self, seen: Seen, forward: Forward) -> Answer:
        parts = urlsplit(seen.path)
        match = re.match(_REFERRERS, parts.path)
        assert match is not None
        wanted = parse_qs(parts.query).get("artifactType", [])
        with self._lock:
            listed = list(self.index.get((match.group(1), match.group(2)), {}).values())
        headers = [("Content-Type", "application/vnd.oci.image.index.v1+json")]
        if wanted:
            listed = [d for d in listed if d["artifactType"] in wanted]
            headers.append(("OCI-Filters-Applied", "artifactType"))
        body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                           "manifests": listed}).encode()
        return Answer(200, headers, body)


@pytest.fixture
def referrers_api(fault_proxy: Callable[..., FaultProxy]) -> Iterator[Callable[[RunningRegistry], ReferrersApi]]:
    """Call with a RunningRegistry: the referrers API stub in front of it (stopped after the test)."""
    yield lambda registry: ReferrersApi(fault_proxy(registry))
