"""Signed images made the way cosign makes them, and an oracle that checks them at a registry.

Nothing here imports ``bundler``: the oracle is independent of the code it judges. It talks to a
registry with plain httpx and checks signatures with the ``cryptography`` package.

cosign's format, as made here (Debian's skopeo 1.9 has sigstore signing compiled out):

- a **signature** is an OCI manifest whose layer is a *simple signing* payload (JSON naming the
  image's manifest digest) with the base64 ECDSA P-256 / SHA-256 signature of those bytes in the
  ``dev.cosignproject.cosign/signature`` annotation. Under cosign's tag ``sha256-<hex>.sig``, or as an
  OCI 1.1 referrer (``subject`` = the image, ``artifactType`` cosign's signature type);
- an **attestation** (``.att``): a DSSE envelope of an in-toto statement, signed over DSSE's PAE;
- an **SBOM**: an SPDX document as an OCI 1.1 referrer, itself signed (a referrer of a referrer).

A referrer is pushed by digest; where the registry does not answer with ``OCI-Subject`` (it has no
referrers API) the pusher maintains the fallback tag ``sha256-<hex>``, an index of referrers, as oras does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
from dataclasses import dataclass, field

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["SignedImage", "SignedSet", "Signer", "add_signed_sbom", "make_signed_set", "oracle_check", "push_artifact"]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
EMPTY = "application/vnd.oci.empty.v1+json"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIG_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"
DSSE = "application/vnd.dsse.envelope.v1+json"
SPDX = "application/spdx+json"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
ACCEPT = f"{OCI_INDEX}, {OCI_MANIFEST}"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


class Signer:
    """An ECDSA P-256 key, as ``cosign generate-key-pair`` makes."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.public = self.key.public_key()

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self.key.sign(data, ec.ECDSA(hashes.SHA256()))).decode()


class _Registry:
    """Plain distribution API calls: enough to push and read images and artifacts."""

    def __init__(self, host: str) -> None:
        self.http = httpx.Client(base_url=f"http://{host}", timeout=30)
        self.host = host

    def blob(self, repo: str, data: bytes, media_type: str, **extra: object) -> dict:
        digest = _digest(data)
        if self.http.head(f"/v2/{repo}/blobs/{digest}").status_code != 200:
            start = self.http.post(f"/v2/{repo}/blobs/uploads/")
            start.raise_for_status()
            location = httpx.URL(start.headers["location"])
            self.http.put(location.copy_merge_params({"digest": digest}), content=data,
                          headers={"Content-Type": "application/octet-stream"}).raise_for_status()
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}

    def put_manifest(self, repo: str, reference: str, document: dict) -> tuple[dict, httpx.Response]:
        data = _json(document)
        response = self.http.put(f"/v2/{repo}/manifests/{reference}", content=data,
                                 headers={"Content-Type": document["mediaType"]})
        response.raise_for_status()
        descriptor = {"mediaType": document["mediaType"], "digest": _digest(data), "size": len(data)}
        return descriptor, response

    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str] | None:
        response = self.http.get(f"/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT})
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.content, response.headers["docker-content-digest"]

    def get_blob(self, repo: str, digest: str) -> bytes:
        response = self.http.get(f"/v2/{repo}/blobs/{digest}", follow_redirects=True)
        response.raise_for_status()
        return response.content

    def referrers(self, repo: str, digest: str) -> list[dict] | None:
        """The referrers API's list, or ``None`` where the registry has no such API."""
        response = self.http.get(f"/v2/{repo}/referrers/{digest}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json().get("manifests", [])


def push_artifact(host: str, repo: str, reference: str, config: tuple[bytes, str], layers: list[tuple[bytes, str]],
                  *, subject: dict | None = None, artifact_type: str = "",
                  layer_annotations: list[dict] | None = None) -> dict:
    """Push an OCI manifest of ``config`` and ``layers`` under ``reference`` (empty: its digest); with
    ``subject``, as a referrer (the fallback tag kept where the registry does not index it)."""
    registry = _Registry(host)
    notes = layer_annotations or [{} for _ in layers]
    document: dict = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": registry.blob(repo, config[0], config[1]),
        "layers": [registry.blob(repo, data, kind, **({"annotations": note} if note else {}))
                   for (data, kind), note in zip(layers, notes)],
    }
    if artifact_type:
        document["artifactType"] = artifact_type
    if subject is not None:
        document["subject"] = {key: subject[key] for key in ("mediaType", "digest", "size")}
    descriptor, response = registry.put_manifest(repo, reference or _digest(_json(document)), document)
    if subject is not None and "oci-subject" not in response.headers:
        _add_to_fallback(registry, repo, subject["digest"], {**descriptor, "artifactType": artifact_type or config[1]})
    return descriptor


def _add_to_fallback(registry: _Registry, repo: str, subject: str, descriptor: dict) -> None:
    tag = subject.replace(":", "-")
    found = registry.get_manifest(repo, tag)
    index = json.loads(found[0]) if found else {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    index["manifests"].append(descriptor)
    registry.put_manifest(repo, tag, index)


@dataclass
class SignedImage:
    repo: str
    tag: str
    digest: str
    children: list[str] = field(default_factory=list)

    @property
    def signed(self) -> list[str]:
        """Every digest that carries a signature: the top manifest and every child."""
        return [self.digest, *self.children]


@dataclass
class SignedSet:
    host: str
    signer: Signer
    images: list[SignedImage]
    artifact: SignedImage
    """A Helm chart pushed as an OCI artifact (not signed)."""

    def lines(self) -> list[str]:
        return [f"{self.host}/{image.repo}:{image.tag}" for image in [*self.images, self.artifact]]


def _image(registry: _Registry, repo: str, rng: random.Random, arch: str) -> dict:
    layer = rng.randbytes(2000)
    config = _json({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]}})
    document = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": registry.blob(repo, config, OCI_CONFIG),
                "layers": [registry.blob(repo, layer, OCI_LAYER)]}
    descriptor, _ = registry.put_manifest(repo, _digest(_json(document)), document)
    return {**descriptor, "platform": {"architecture": arch, "os": "linux"}}


def _payload(host: str, repo: str, digest: str) -> bytes:
    return _json({"critical": {"identity": {"docker-reference": f"{host}/{repo}"},
                               "image": {"docker-manifest-digest": digest},
                               "type": "cosign container image signature"}, "optional": None})


def _sign_cosign(registry: _Registry, signer: Signer, repo: str, digest: str) -> None:
    """cosign's tag scheme: the signature manifest under ``sha256-<hex>.sig``."""
    payload = _payload(registry.host, repo, digest)
    push_artifact(registry.host, repo, digest.replace(":", "-") + ".sig", (b"{}", OCI_CONFIG),
                  [(payload, SIMPLE_SIGNING)], layer_annotations=[{SIGNATURE_ANNOTATION: signer.sign(payload)}])


def _sign_referrer(registry: _Registry, signer: Signer, repo: str, subject: dict) -> dict:
    """An OCI 1.1 signature: the same layer in an artifact whose ``subject`` is what it signs."""
    payload = _payload(registry.host, repo, subject["digest"])
    return push_artifact(registry.host, repo, "", (b"{}", EMPTY), [(payload, SIMPLE_SIGNING)], subject=subject,
                         artifact_type=COSIGN_SIG_TYPE,
                         layer_annotations=[{SIGNATURE_ANNOTATION: signer.sign(payload)}])


def _attest(registry: _Registry, signer: Signer, repo: str, digest: str) -> None:
    """cosign's ``.att``: a DSSE envelope of an in-toto provenance statement about ``digest``."""
    statement = _json({"_type": "https://in-toto.io/Statement/v0.1", "predicateType": "https://slsa.dev/provenance/v0.2",
                       "subject": [{"name": f"{registry.host}/{repo}", "digest": {"sha256": digest.split(":")[1]}}],
                       "predicate": {"builder": {"id": "tests"}}})
    payload_type = "application/vnd.in-toto+json"
    pae = b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(statement), statement)
    envelope = _json({"payloadType": payload_type, "payload": base64.b64encode(statement).decode(),
                      "signatures": [{"keyid": "", "sig": signer.sign(pae)}]})
    push_artifact(registry.host, repo, digest.replace(":", "-") + ".att", (b"{}", OCI_CONFIG), [(envelope, DSSE)],
                  layer_annotations=[{"predicateType": "https://slsa.dev/provenance/v0.2"}])


def _sbom(registry: _Registry, signer: Signer, repo: str, subject: dict) -> None:
    """An SPDX SBOM as an OCI 1.1 referrer of the image, and a signature of the SBOM (a referrer's referrer)."""
    document = _json({"spdxVersion": "SPDX-2.3", "name": repo, "SPDXID": "SPDXRef-DOCUMENT",
                      "documentDescribes": [subject["digest"]]})
    sbom = push_artifact(registry.host, repo, "", (b"{}", EMPTY), [(document, SPDX)], subject=subject,
                         artifact_type=SPDX)
    _sign_referrer(registry, signer, repo, sbom)


def make_signed_set(host: str, prefix: str, seed: int = 17) -> SignedSet:
    """Two multi-arch images and a single-arch one, every manifest signed (index by cosign tag, children by
    OCI 1.1 referrers), the first attested and with a signed SBOM; and an unsigned Helm chart artifact."""
    registry, rng, signer = _Registry(host), random.Random(seed), Signer()
    images = []
    for number, archs in enumerate((("amd64", "arm64"), ("amd64", "arm64"), ("amd64",))):
        repo, tag = f"{prefix}/app{number}", "1.0"
        children = [_image(registry, repo, rng, arch) for arch in archs]
        if len(children) > 1:
            top, _ = registry.put_manifest(repo, tag, {"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                       "manifests": children})
            for child in children:
                _sign_referrer(registry, signer, repo, child)
        else:
            found = registry.get_manifest(repo, children[0]["digest"])
            assert found is not None
            top, _ = registry.put_manifest(repo, tag, json.loads(found[0]))
            children = []
        _sign_cosign(registry, signer, repo, top["digest"])
        if number == 0:
            _attest(registry, signer, repo, top["digest"])
            _sbom(registry, signer, repo, top)
        images.append(SignedImage(repo, tag, top["digest"], [child["digest"] for child in children]))
    chart = push_artifact(host, f"{prefix}/charts/demo", "0.1.0", (_json({"name": "demo", "version": "0.1.0"}),
                          HELM_CONFIG), [(rng.randbytes(1500), HELM_CHART)])
    return SignedSet(host, signer, images, SignedImage(f"{prefix}/charts/demo", "0.1.0", chart["digest"]))


def add_signed_sbom(signed: SignedSet, image: SignedImage) -> None:
    """Attach a signed SBOM to ``image`` later (an image re-signed since a bundle was made)."""
    registry = _Registry(signed.host)
    found = registry.get_manifest(image.repo, image.digest)
    assert found is not None
    subject = {"mediaType": json.loads(found[0])["mediaType"], "digest": image.digest, "size": len(found[0])}
    _sbom(registry, signed.signer, image.repo, subject)


# --- the oracle ---------------------------------------------------------------------------------


def oracle_check(host: str, repo: str, tag: str, signer: Signer, digests_below: bool = True) -> list[str]:
    """What fails at the target: for the tag's digest and (an index's) every child, a signature must be found
    (cosign's tag, the referrers API, or the fallback tag), name that digest and verify with the key.
    Returns one line per digest without a valid signature; empty when all verify."""
    registry = _Registry(host)
    found = registry.get_manifest(repo, tag)
    if found is None:
        return [f"{repo}:{tag}: no such tag"]
    data, top = found
    document = json.loads(data)
    digests = [top, *([child["digest"] for child in document.get("manifests", [])] if digests_below else [])]
    return [f"{repo}@{digest}: no valid signature" for digest in digests
            if not any(_verifies(registry, signer, repo, digest, manifest) for manifest in _signatures(registry, repo,
                                                                                                        digest))]


def _signatures(registry: _Registry, repo: str, digest: str) -> list[dict]:
    """Candidate signature manifests of ``digest``: cosign's tag, then the referrers (API or fallback tag)."""
    manifests = []
    cosign = registry.get_manifest(repo, digest.replace(":", "-") + ".sig")
    if cosign is not None:
        manifests.append(json.loads(cosign[0]))
    listed = registry.referrers(repo, digest)
    if listed is None:
        fallback = registry.get_manifest(repo, digest.replace(":", "-"))
        listed = json.loads(fallback[0])["manifests"] if fallback else []
    for descriptor in listed:
        if descriptor.get("artifactType") == COSIGN_SIG_TYPE:
            referrer = registry.get_manifest(repo, descriptor["digest"])
            if referrer is not None and _digest(referrer[0]) == descriptor["digest"]:
                manifests.append(json.loads(referrer[0]))
    return manifests


def _verifies(registry: _Registry, signer: Signer, repo: str, digest: str, manifest: dict) -> bool:
    for layer in manifest.get("layers", []):
        signature = layer.get("annotations", {}).get(SIGNATURE_ANNOTATION)
        if layer.get("mediaType") != SIMPLE_SIGNING or not signature:
            continue
        payload = registry.get_blob(repo, layer["digest"])
        if _digest(payload) != layer["digest"]:
            continue
        named = json.loads(payload)["critical"]["image"]["docker-manifest-digest"]
        try:
            signer.public.verify(base64.b64decode(signature), payload, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            continue
        if named == digest:
            return True
    return False
