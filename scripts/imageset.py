"""Realistic container image sets for tests, the benchmark and the demo, plus a seeder for a registry.

Why this exists: imgbundle must move what operators really pack (kubespray's offline ``images.list``:
multi-arch Docker manifest lists and OCI indexes, buildx attestation manifests, base layers shared by many
images, the odd single-platform image) and tests cannot reach the internet. So we generate such a set,
deterministically for a seed, as an OCI Image Layout directory, and push it into a local registry.

The seeder deliberately uses plain httpx and nothing of the ``bundler`` package: it is the independent
oracle that puts known content into a source registry, so a bug in imgbundle cannot hide behind itself.

    python scripts/imageset.py --out DIR --images 60 --size 300M --seed 1 [--big-layer 1G]
    python scripts/imageset.py seed --layout DIR --to http://127.0.0.1:5000 [--user U --password P]

Layer blobs are seeded random bytes labelled ``tar+gzip``: registries and skopeo never look inside, and
random bytes are as incompressible as real gzip layers. Configs, manifests and attestations are
real-looking JSON. Big layers are written in 1 MiB pieces, hashed as they are written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

__all__ = [
    "ImageSet",
    "ImageInfo",
    "ChildInfo",
    "SeedResult",
    "SeedError",
    "RegistryAuth",
    "generate",
    "generate_small",
    "seed_registry",
    "parse_size",
    "main",
    "MIN_IMAGES",
    "MiB",
]

MiB = 1024 * 1024
MIN_IMAGES = 12
"""The first twelve catalogue entries hold every special case; fewer images would drop some."""

CHUNK = MiB
"""Layer bytes are produced, hashed and written in pieces of this size: never a whole layer in memory."""

MIN_LAYER = 256
"""Smallest generated layer, so that tiny total sizes still give distinct, non-empty layers."""

SMALL_BLOB = 4 * MiB
"""Blobs up to this size are sent from memory so that an auth retry can resend them."""

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
IN_TOTO = "application/vnd.in-toto+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])
REF_NAME = "org.opencontainers.image.ref.name"
SEED_ANNOTATION = "io.imgbundle.testdata.seed"

# Kinds of image, as recorded in imageset.json.
DOCKER_LIST_KIND = "docker-list"
OCI_INDEX_KIND = "oci-index"
OCI_ATTESTED_KIND = "oci-index+attestations"
DOCKER_SINGLE_KIND = "docker-manifest"
OCI_SINGLE_KIND = "oci-manifest"
INDEX_KINDS = frozenset({DOCKER_LIST_KIND, OCI_INDEX_KIND, OCI_ATTESTED_KIND})
DOCKER_KINDS = frozenset({DOCKER_LIST_KIND, DOCKER_SINGLE_KIND})


# ----------------------------------------------------------------------------------------------------------
# The catalogue: kubespray's offline images.list, reshaped into what the generator needs

P1 = ("linux/amd64",)
P2 = ("linux/amd64", "linux/arm64")
P3 = ("linux/amd64", "linux/arm64/v8", "linux/arm/v7")
P4 = ("linux/amd64", "linux/arm64", "linux/ppc64le", "linux/s390x")
P5 = ("linux/amd64", "linux/arm/v7", "linux/arm64", "linux/ppc64le", "linux/s390x")

BASES: dict[str, tuple[float, ...]] = {
    "static": (0.8, 0.1),  # distroless/static: base files, then ca-certificates + tzdata
    "debian": (29.0,),  # debian:bookworm-slim
    "alpine": (3.4,),
    "ubi": (38.0,),  # ubi-minimal, under calico
    "ubuntu": (28.0,),  # under cilium and envoy
    "scratch": (),
}
"""Base image layers in MB (relative weights), one copy per architecture."""

FAMILIES: dict[str, tuple[float, ...]] = {
    "calico": (24.0, 6.0, 0.4),  # calico images share most of their layers
    "cilium": (16.0,),
    "kube": (1.2,),  # go-runner under the kube-* control plane images
    "nginx": (9.0, 0.02, 0.02),  # nginx build and its entrypoint scripts
    "csi": (0.4,),
    "": (),
}
"""Layers shared by a family of images, in MB, one copy per architecture."""


@dataclass(frozen=True)
class Spec:
    """One catalogue entry: an image's shape, not its bytes."""

    path: str
    tag: str
    kind: str
    platforms: tuple[str, ...]
    base: str = "static"
    family: str = ""
    app: tuple[float, ...] = (10.0,)
    alias_of: str = ""
    noncanonical: bool = False
    big_layer: bool = False
    rebuilt: bool = False
    """Rebuilt under the same tag: the top app layer is new (``generate(upgrade=True)``)."""

    @property
    def name(self) -> str:
        return f"{self.path}:{self.tag}"


def _s(path: str, tag: str, kind: str, platforms: tuple[str, ...], base: str, family: str, *app: float,
       **flags: Any) -> Spec:
    return Spec(path, tag, kind, platforms, base, family, tuple(app), **flags)


DL, OI, OA, DS, OS = DOCKER_LIST_KIND, OCI_INDEX_KIND, OCI_ATTESTED_KIND, DOCKER_SINGLE_KIND, OCI_SINGLE_KIND

CATALOGUE: tuple[Spec, ...] = (
    # The first MIN_IMAGES entries cover every special case, so the small test set has them all.
    # calico/node is an OCI index because skopeo 1.9's oci: transport cannot address a Docker-typed entry.
    _s("calico/node", "v3.26.4", OI, P4, "ubi", "calico", 25.2, 0.3),
    _s("calico/cni", "v3.26.4", DL, P4, "ubi", "calico", 13.2),
    _s("cilium/cilium", "v1.13.4", OI, P2, "ubuntu", "cilium", 22.8, 2.4, big_layer=True),
    _s("coredns/coredns", "v1.10.1", DL, P5, "static", "", 8.4),
    _s("pause", "3.9", DL, P5, "scratch", "", 0.3),
    _s("library/nginx", "1.25.2-alpine", OA, P3, "alpine", "nginx", 1.8, 0.01),
    _s("library/nginx", "stable-alpine", OA, P3, "alpine", "nginx", alias_of="library/nginx:1.25.2-alpine"),
    _s("jetstack/cert-manager-controller", "v1.13.2", OI, P5, "static", "", 9.6, noncanonical=True),
    _s("sig-storage/csi-attacher", "v3.3.0", DL, P4, "static", "csi", 4.8),
    _s("ingress-nginx/controller", "v1.9.4", OA, P4, "alpine", "nginx", 8.4, 0.05),
    _s("mirantis/k8s-netchecker-server", "v1.2.2", DS, P1, "debian", "", 4.8),
    # A three-level path, as mirrors lay out registry.k8s.io (operators then flatten or keep it).
    _s("k8s/sig-storage/local-volume-provisioner", "v2.5.0", OS, P1, "static", "csi", 8.4),
    # The rest of kubespray's list.
    _s("calico/kube-controllers", "v3.26.4", DL, P4, "ubi", "calico", 7.2),
    _s("calico/typha", "v3.26.4", DL, P4, "ubi", "calico", 5.4),
    _s("calico/pod2daemon-flexvol", "v3.26.4", DL, P4, "ubi", "calico", 1.2),
    _s("calico/apiserver", "v3.26.4", DL, P4, "ubi", "calico", 9.0),
    _s("cilium/operator", "v1.13.4", OI, P2, "static", "", 15.6),
    _s("cilium/hubble-relay", "v1.13.4", OI, P2, "static", "", 6.6),
    _s("cilium/certgen", "v0.1.8", DL, P2, "static", "", 5.4),
    _s("cilium/hubble-ui", "v0.11.0", DL, P2, "alpine", "nginx", 1.2),
    _s("cilium/hubble-ui-backend", "v0.11.0", DL, P2, "static", "", 4.8),
    _s("coreos/etcd", "v3.5.10", DL, P4, "static", "", 12.0),
    _s("envoyproxy/envoy", "v1.22.5", DL, P2, "ubuntu", "", 21.6),
    _s("k8snetworkplumbingwg/multus-cni", "v3.8", DL, P4, "debian", "", 10.8),
    _s("flannel/flannel", "v0.22.0", DL, P5, "alpine", "", 13.2),
    _s("flannel/flannel-cni-plugin", "v1.1.2", DL, P5, "alpine", "", 1.8),
    _s("weaveworks/weave-kube", "2.8.1", DL, P5, "alpine", "", 16.8),
    _s("weaveworks/weave-npc", "2.8.1", DL, P5, "alpine", "", 7.2),
    _s("kubeovn/kube-ovn", "v1.11.5", DL, P2, "ubuntu", "", 36.0),
    _s("cloudnativelabs/kube-router", "v2.0.0", DL, P4, "alpine", "", 14.4),
    _s("kube-vip/kube-vip", "v0.5.12", DL, P3, "scratch", "", 8.4),
    _s("library/haproxy", "2.8.2-alpine", OA, P3, "alpine", "", 6.0, 0.01),
    _s("dns/k8s-dns-node-cache", "1.22.28", DL, P5, "debian", "", 8.4),
    _s("cpa/cluster-proportional-autoscaler", "v1.8.8", DL, P5, "static", "", 8.4),
    _s("library/registry", "2.8.1", DL, P3, "alpine", "", 4.2, 0.01),
    _s("metrics-server/metrics-server", "v0.6.4", DL, P5, "static", "", 10.8),
    _s("external_storage/cephfs-provisioner", "v2.1.0-k8s1.11", DS, P1, "debian", "", 22.8),
    _s("external_storage/rbd-provisioner", "v2.1.1-k8s1.11", DS, P1, "debian", "", 21.6),
    _s("rancher/local-path-provisioner", "v0.0.24", DL, P4, "alpine", "", 8.4),
    _s("amazon/aws-alb-ingress-controller", "v1.1.9", DS, P1, "alpine", "", 9.0),
    _s("jetstack/cert-manager-cainjector", "v1.13.2", OI, P5, "static", "", 7.2),
    _s("jetstack/cert-manager-webhook", "v1.13.2", OI, P5, "static", "", 7.8),
    _s("sig-storage/csi-provisioner", "v3.0.0", DL, P4, "static", "csi", 5.4),
    _s("sig-storage/csi-snapshotter", "v5.0.0", DL, P4, "static", "csi", 4.8),
    _s("sig-storage/snapshot-controller", "v4.2.1", DL, P4, "static", "csi", 4.2),
    _s("sig-storage/csi-resizer", "v1.3.0", DL, P4, "static", "csi", 4.8),
    _s("sig-storage/csi-node-driver-registrar", "v2.4.0", DL, P4, "static", "csi", 3.6),
    _s("k8scloudprovider/cinder-csi-plugin", "v1.22.0", DL, P2, "debian", "", 14.4),
    _s("amazon/aws-ebs-csi-driver", "v0.5.0", DS, P1, "debian", "", 13.2),
    _s("kubernetesui/dashboard", "v2.7.0", DL, P5, "scratch", "", 36.0),
    _s("kubernetesui/metrics-scraper", "v1.0.8", DL, P5, "scratch", "", 9.0),
    _s("metallb/speaker", "v0.13.9", DL, P5, "alpine", "", 12.0),
    _s("metallb/controller", "v0.13.9", DL, P5, "alpine", "", 10.2),
    _s("kube-apiserver", "v1.28.6", DL, P4, "static", "kube", 18.0),
    _s("kube-controller-manager", "v1.28.6", DL, P4, "static", "kube", 16.8),
    _s("kube-scheduler", "v1.28.6", DL, P4, "static", "kube", 10.8),
    _s("kube-proxy", "v1.28.6", DL, P4, "debian", "kube", 12.0),
    _s("mirantis/k8s-netchecker-agent", "v1.2.2", DS, P1, "debian", "", 3.6),
)

_EXTRA_SHAPES = ((DL, P4, "static"), (OI, P2, "alpine"), (OA, P3, "debian"), (DL, P5, "alpine"), (OS, P1, "static"))


def _choose_specs(images: int) -> list[Spec]:
    """The first ``images`` catalogue entries, extended with ``extra/tool-N`` images past its end."""
    if images < MIN_IMAGES:
        raise ValueError(f"images must be at least {MIN_IMAGES}: fewer would drop special cases")
    specs = list(CATALOGUE[:images])
    for n in range(len(specs), images):
        kind, platforms, base = _EXTRA_SHAPES[n % len(_EXTRA_SHAPES)]
        specs.append(_s(f"extra/tool-{n:03d}", f"v1.{n}.0", kind, platforms, base, "", 4.0 + (n % 7) * 2.0))
    return specs


# ----------------------------------------------------------------------------------------------------------
# Results


@dataclass
class ChildInfo:
    """One manifest listed by an index: an image for a platform, or an attestation (``unknown/unknown``)."""

    digest: str
    media_type: str
    platform: str
    size: int


@dataclass
class ImageInfo:
    """One tagged image of the set; ``name`` is ``path:tag`` without a registry host."""

    name: str
    digest: str
    media_type: str
    platforms: list[str]
    kind: str
    size: int = 0
    """Bytes of the top manifest or index."""
    bytes: int = 0
    """Bytes of every blob this image reaches, manifests included: what copying it alone would move."""
    alias_of: str = ""
    children: list[ChildInfo] = field(default_factory=list)

    @property
    def repository(self) -> str:
        return self.name.rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.name.rsplit(":", 1)[1]


@dataclass
class ImageSet:
    """What ``generate`` wrote; saved as ``imageset.json`` beside the layout (``layout`` is that directory)."""

    seed: int
    layout: Path
    images: list[ImageInfo]
    unique_bytes: int
    image_bytes_sum: int
    total_size: int
    big_layer: int = 0
    big_layer_digest: str = ""
    noncanonical: list[str] = field(default_factory=list)
    """Digests of the manifests serialised with odd whitespace (an index and one of its children)."""
    pinned: dict[str, str] = field(default_factory=dict)
    """How ``image_list`` writes two refs: name -> ``tag+digest`` or ``digest``."""
    upgrade: bool = False
    """The "next month" variant of the set (see ``_upgraded``)."""

    @property
    def sharing(self) -> float:
        """Share of per-image bytes that other images also hold: 1 - unique / sum."""
        return 1.0 - self.unique_bytes / self.image_bytes_sum

    def image(self, name: str) -> ImageInfo:
        for info in self.images:
            if info.name == name:
                return info
        raise KeyError(name)

    def image_list(self, registry_host: str, repo_prefix: str = "") -> str:
        """An images.list for these images on ``registry_host``: comments, a blank line, two pinned refs."""
        lines = [f"# imgbundle test image set: seed {self.seed}, {len(self.images)} images",
                 f"# generated by scripts/imageset.py for {registry_host}", ""]
        prefix = f"{registry_host}/{_prefix(repo_prefix)}"
        for info in self.images:
            pin = self.pinned.get(info.name)
            if pin == "tag+digest":
                lines.append(f"{prefix}{info.name}@{info.digest}")
            elif pin == "digest":
                lines.append(f"{prefix}{info.repository}@{info.digest}")
            else:
                lines.append(f"{prefix}{info.name}")
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        data = asdict(self)
        data["layout"] = str(self.layout)
        data["sharing"] = round(self.sharing, 4)
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def load(cls, out_dir: Path) -> "ImageSet":
        """Read ``imageset.json`` back (the benchmark reuses a generated set); ``layout`` becomes ``out_dir``."""
        data = json.loads((Path(out_dir) / "imageset.json").read_text())
        data.pop("sharing", None)
        images = [ImageInfo(**{**i, "children": [ChildInfo(**c) for c in i["children"]]}) for i in data.pop("images")]
        return cls(**{**data, "layout": Path(out_dir), "images": images})


# ----------------------------------------------------------------------------------------------------------
# Generation: plan layer sizes, stream layers, then configs, manifests and indexes


def _platform(text: str) -> dict[str, str]:
    os_name, arch, *variant = text.split("/")
    return {"architecture": arch, "os": os_name, **({"variant": variant[0]} if variant else {})}


def _arch_key(text: str) -> str:
    """Bytes are per architecture; arm64 and arm64/v8 are the same machine."""
    parts = text.split("/")
    return "arm64" if parts[1] == "arm64" else "-".join(parts[1:])


def _layer_keys(spec: Spec, platform: str) -> list[tuple[str, float]]:
    """(key, MB weight) of each layer of one platform image; equal keys are the same blob."""
    arch = _arch_key(platform)
    keys = [(f"base/{spec.base}/{arch}/{i}", w) for i, w in enumerate(BASES[spec.base])]
    keys += [(f"family/{spec.family}/{arch}/{i}", w) for i, w in enumerate(FAMILIES[spec.family])]
    keys += [(f"app/{spec.name}/{arch}/{i}", w) for i, w in enumerate(spec.app)]
    if spec.rebuilt and spec.app:
        keys[-1] = (keys[-1][0] + "/rebuilt", keys[-1][1])
    return keys


UPGRADE_FROM, UPGRADE_TO = "v3.26.4", "v3.26.5"
REBUILT = "cilium/cilium:v1.13.4"


def _upgraded(specs: list[Spec], sizes: dict[str, int]) -> tuple[list[Spec], dict[str, int]]:
    """Next month's set, for delta bundles: calico/* moves v3.26.4 -> v3.26.5 (new app layers and configs
    over the shared ubi and calico family layers) and cilium/cilium is rebuilt under its tag (new top
    layer). Every other image, and every layer that is kept, is byte-identical to the original set."""
    new_specs, new_sizes = [], {}
    for spec in specs:
        new = spec
        if spec.family == "calico" and spec.tag == UPGRADE_FROM:
            new = Spec(**{**asdict(spec), "tag": UPGRADE_TO})
        elif spec.name == REBUILT:
            new = Spec(**{**asdict(spec), "rebuilt": True})
        for platform in () if spec.alias_of else spec.platforms:
            for (old_key, _), (new_key, _) in zip(_layer_keys(spec, platform), _layer_keys(new, platform)):
                new_sizes[new_key] = sizes[old_key]
        new_specs.append(new)
    return new_specs, new_sizes


def _plan_layer_sizes(specs: list[Spec], total_size: int, seed: int, overhead: int) -> dict[str, int]:
    """Byte size of every distinct layer, scaled so that all of them together come to about ``total_size``."""
    weights: dict[str, float] = {}
    for spec in specs:
        if spec.alias_of:
            continue
        for platform in spec.platforms:
            for key, weight in _layer_keys(spec, platform):
                jitter = random.Random(f"{seed}:size:{key}").uniform(0.85, 1.15)
                weights.setdefault(key, weight * jitter)
    budget = max(total_size - overhead, MIN_LAYER * len(weights))
    scale = budget / sum(weights.values())
    return {key: max(MIN_LAYER, int(weight * scale)) for key, weight in weights.items()}


class _LayoutWriter:
    """Writes blobs into ``blobs/sha256`` of an OCI layout and remembers each one's size."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blob_dir = root / "blobs" / "sha256"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.sizes: dict[str, int] = {}

    def write_stream(self, chunks: Iterator[bytes]) -> tuple[str, int]:
        """Hash while writing to a temporary file, then rename it to its digest."""
        sha, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=self.blob_dir, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    sha.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
        except BaseException:
            os.unlink(tmp)
            raise
        digest = f"sha256:{sha.hexdigest()}"
        os.replace(tmp, self.blob_dir / sha.hexdigest())
        self.sizes[digest] = size
        return digest, size

    def write_bytes(self, data: bytes) -> tuple[str, int]:
        return self.write_stream(iter([data]))


def _random_chunks(key: str, size: int) -> Iterator[bytes]:
    """``size`` seeded random bytes in CHUNK pieces: a layer that never sits whole in memory."""
    rng = random.Random(key)
    for start in range(0, size, CHUNK):
        yield rng.randbytes(min(CHUNK, size - start))


def _compact(obj: Any) -> bytes:
    """How buildkit and containerd serialise: no whitespace."""
    return json.dumps(obj, separators=(",", ":")).encode()


def _docker_indent(obj: Any) -> bytes:
    """How docker/distribution serialises schema2 (Go's MarshalIndent with three spaces)."""
    return json.dumps(obj, indent=3).encode()


def _odd_whitespace(obj: Any) -> bytes:
    """Valid JSON no encoder would choose: proves that nobody re-encodes a manifest on the way."""
    return (json.dumps(obj, indent=2, separators=(", ", " : ")) + "\n").encode()


def _descriptor(media_type: str, digest: str, size: int, docker: bool, **extra: Any) -> dict[str, Any]:
    """Docker orders descriptor keys mediaType, size, digest; OCI tools mediaType, digest, size."""
    if docker:
        return {"mediaType": media_type, "size": size, "digest": digest, **extra}
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


@dataclass
class _Built:
    """A written manifest: its bytes' digest, size and media type, and the blobs it reaches."""

    digest: str
    size: int
    media_type: str
    platform: str
    reach: set[str]
    subject: str = ""
    """For an attestation: the digest of the image manifest it describes."""


class _Generator:
    """Turns a list of specs into blobs in a layout; one instance per ``generate`` call."""

    def __init__(self, writer: _LayoutWriter, seed: int, sizes: dict[str, int]) -> None:
        self.writer = writer
        self.seed = seed
        self.sizes = sizes
        self.layers: dict[str, tuple[str, int]] = {}
        self.noncanonical: list[str] = []
        self.big_layer_digest = ""

    def write_layers(self, big_layer: int) -> None:
        for key, size in self.sizes.items():
            self.layers[key] = self.writer.write_stream(_random_chunks(f"{self.seed}:layer:{key}", size))
        if big_layer:
            self.layers["big"] = self.writer.write_stream(_random_chunks(f"{self.seed}:layer:big", big_layer))
            self.big_layer_digest = self.layers["big"][0]

    def image(self, spec: Spec, number: int) -> tuple[_Built, list[_Built]]:
        """Write one tagged image; return its top manifest and (for an index) its children."""
        docker = spec.kind in DOCKER_KINDS
        if spec.kind not in INDEX_KINDS:
            return self.platform_manifest(spec, spec.platforms[0], number, docker, big=spec.big_layer), []
        children = [self.platform_manifest(spec, p, number, docker, pretty=spec.noncanonical and i == 0,
                                           big=spec.big_layer and i == 0)
                    for i, p in enumerate(spec.platforms)]
        if spec.kind == OCI_ATTESTED_KIND:
            children += [self.attestation(spec, child) for child in children]
        return self.index(spec, children, docker), children

    def platform_manifest(self, spec: Spec, platform: str, number: int, docker: bool, *, pretty: bool = False,
                          big: bool = False) -> _Built:
        layers = [self.layers[key] for key, _ in _layer_keys(spec, platform)]
        if big and "big" in self.layers:
            layers.append(self.layers["big"])
        return self._manifest(spec, platform, number, docker, layers, pretty=pretty)

    def small_manifest(self, spec: Spec, number: int) -> _Built:
        """An OCI image of the one layer ``self.layers["own"]`` (``generate_small``)."""
        return self._manifest(spec, spec.platforms[0], number, False, [self.layers["own"]], pretty=False)

    def _manifest(self, spec: Spec, platform: str, number: int, docker: bool, layers: list[tuple[str, int]], *,
                  pretty: bool) -> _Built:
        config = self.writer.write_bytes(_compact(self.config(spec, platform, number, layers)))
        layer_type = DOCKER_LAYER if docker else OCI_LAYER
        body = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
            "config": _descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, *config, docker),
            "layers": [_descriptor(layer_type, d, s, docker) for d, s in layers],
        }
        encode = _odd_whitespace if pretty else _docker_indent if docker else _compact
        digest, size = self.writer.write_bytes(encode(body))
        if pretty:
            self.noncanonical.append(digest)
        reach = {digest, config[0], *(d for d, _ in layers)}
        return _Built(digest, size, body["mediaType"], platform, reach)

    def config(self, spec: Spec, platform: str, number: int, layers: list[tuple[str, int]]) -> dict[str, Any]:
        """An image config like buildkit writes: platform, runtime config, history, rootfs diff_ids."""
        created = f"2023-{1 + number % 12:02d}-{1 + number % 28:02d}T{number % 24:02d}:14:07Z"
        binary = spec.path.rsplit("/", 1)[-1]
        history = [{"created": created, "created_by": f"COPY layer {i} / # buildkit",
                    "comment": "buildkit.dockerfile.v0"} for i in range(len(layers))]
        return {
            **_platform(platform),
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Entrypoint": [f"/usr/local/bin/{binary}"],
                "WorkingDir": "/",
                "Labels": {"org.opencontainers.image.version": spec.tag,
                           "org.opencontainers.image.source": f"https://example.invalid/{spec.path}",
                           SEED_ANNOTATION: str(self.seed)},
            },
            "created": created,
            "history": history,
            "rootfs": {"type": "layers", "diff_ids": [_diff_id(d) for d, _ in layers]},
        }

    def attestation(self, spec: Spec, image: _Built) -> _Built:
        """A buildx provenance attestation for ``image``: in-toto layer, unknown/unknown platform."""
        invocation = hashlib.sha256(f"{self.seed}:{image.digest}".encode()).hexdigest()[:26]
        statement = {
            "_type": "https://in-toto.io/Statement/v0.1",
            "predicateType": "https://slsa.dev/provenance/v0.2",
            "subject": [{"name": f"pkg:docker/{spec.path}@{spec.tag}?platform={image.platform.replace('/', '%2F')}",
                         "digest": {"sha256": image.digest.split(":", 1)[1]}}],
            "predicate": {"builder": {"id": ""}, "buildType": "https://mobyproject.org/buildkit@v1",
                          "metadata": {"buildInvocationID": invocation,
                                       "completeness": {"parameters": False, "environment": True, "materials": False},
                                       "reproducible": False}},
        }
        layer = self.writer.write_bytes(_compact(statement))
        config = self.writer.write_bytes(_compact({"architecture": "unknown", "os": "unknown", "config": {},
                                                   "rootfs": {"type": "layers", "diff_ids": [layer[0]]}}))
        body = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _descriptor(OCI_CONFIG, *config, False),
            "layers": [_descriptor(IN_TOTO, *layer, False,
                                   annotations={"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"})],
        }
        digest, size = self.writer.write_bytes(_compact(body))
        return _Built(digest, size, OCI_MANIFEST, "unknown/unknown", {digest, config[0], layer[0]}, image.digest)

    def index(self, spec: Spec, children: list[_Built], docker: bool) -> _Built:
        entries = []
        for child in children:
            extra: dict[str, Any] = {"platform": _platform(child.platform)}
            if child.subject:
                extra["annotations"] = {"vnd.docker.reference.digest": child.subject,
                                        "vnd.docker.reference.type": "attestation-manifest"}
            entries.append(_descriptor(child.media_type, child.digest, child.size, docker, **extra))
        body = {"schemaVersion": 2, "mediaType": DOCKER_LIST if docker else OCI_INDEX, "manifests": entries}
        encode = _odd_whitespace if spec.noncanonical else _docker_indent if docker else _compact
        digest, size = self.writer.write_bytes(encode(body))
        if spec.noncanonical:
            self.noncanonical.append(digest)
        reach = {digest}.union(*(c.reach for c in children))
        return _Built(digest, size, body["mediaType"], "", reach)


def _diff_id(layer_digest: str) -> str:
    """A stand-in for the digest of the uncompressed tar (our layers are not really gzip)."""
    return "sha256:" + hashlib.sha256(f"diff:{layer_digest}".encode()).hexdigest()


def generate(out_dir: Path, *, images: int = 60, total_size: int = 300 * MiB, seed: int = 1,
             big_layer: int = 0, upgrade: bool = False) -> ImageSet:
    """Write an image set as an OCI Image Layout in ``out_dir`` (which must be empty or absent).

    The same arguments always give the same bytes. ``total_size`` is the target for all unique blob bytes;
    ``big_layer`` adds one layer of exactly that many bytes on top of it (to the first platform of
    ``cilium/cilium``), for tests of streaming and of splitting big blobs. ``upgrade`` makes the same
    set a month later, sharing most layers with it (see ``_upgraded``): for delta bundles.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty; the image set must not mix with older blobs")
    specs = _choose_specs(images)
    sizes = _plan_layer_sizes(specs, total_size, seed, overhead=_overhead_estimate(specs))
    if upgrade:
        specs, sizes = _upgraded(specs, sizes)
    writer = _LayoutWriter(out_dir)
    gen = _Generator(writer, seed, sizes)
    gen.write_layers(big_layer)
    infos, entries = _write_images(gen, specs)
    _write_layout_files(out_dir, entries, seed)
    image_set = ImageSet(
        seed=seed, layout=out_dir, images=infos, unique_bytes=sum(writer.sizes.values()),
        image_bytes_sum=sum(i.bytes for i in infos), total_size=total_size, big_layer=big_layer,
        big_layer_digest=gen.big_layer_digest, noncanonical=gen.noncanonical, pinned=_pins(specs), upgrade=upgrade)
    (out_dir / "imageset.json").write_text(image_set.to_json())
    return image_set


def generate_small(out_dir: Path, *, images: int = 2000, repositories: int = 50, layer_size: int = 16 * 1024,
                   seed: int = 1) -> ImageSet:
    """A catalogue of many tiny images (a Harbor project backup, a Helm-chart-heavy mirror): ``images``
    single-platform OCI images spread over ``repositories``, each one config and one layer of about
    ``layer_size`` bytes of its own. What such a set costs is requests, not bytes."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty; the image set must not mix with older blobs")
    writer = _LayoutWriter(out_dir)
    gen = _Generator(writer, seed, {})
    rng = random.Random(f"{seed}:small")
    infos: list[ImageInfo] = []
    for number in range(images):
        spec = Spec(f"small/r{number % repositories:02d}/app", f"v{number // repositories}", OCI_SINGLE_KIND, P1,
                    "scratch", "")
        size = max(MIN_LAYER, int(layer_size * rng.uniform(0.5, 1.5)))
        gen.layers = {"own": writer.write_stream(_random_chunks(f"{seed}:small:{number}", size))}
        top = gen.small_manifest(spec, number)
        infos.append(ImageInfo(name=spec.name, digest=top.digest, media_type=top.media_type,
                               platforms=list(spec.platforms), kind=spec.kind, size=top.size,
                               bytes=sum(writer.sizes[d] for d in top.reach)))
    entries = [{"mediaType": i.media_type, "digest": i.digest, "size": i.size, "annotations": {REF_NAME: i.name}}
               for i in infos]
    _write_layout_files(out_dir, entries, seed)
    image_set = ImageSet(seed=seed, layout=out_dir, images=infos, unique_bytes=sum(writer.sizes.values()),
                         image_bytes_sum=sum(i.bytes for i in infos), total_size=images * layer_size)
    (out_dir / "imageset.json").write_text(image_set.to_json())
    return image_set


def _overhead_estimate(specs: list[Spec]) -> int:
    """Bytes of configs, manifests and attestations, roughly, so that layers get the rest of the budget."""
    per_platform = {DOCKER_LIST_KIND: 2400, OCI_INDEX_KIND: 1800, OCI_ATTESTED_KIND: 3800}
    return sum(per_platform.get(s.kind, 2000) * len(s.platforms) for s in specs if not s.alias_of)


def _write_images(gen: _Generator, specs: list[Spec]) -> tuple[list[ImageInfo], list[dict[str, Any]]]:
    """Write every image; return their records and their entries for the layout's index.json."""
    infos: list[ImageInfo] = []
    built: dict[str, ImageInfo] = {}
    for number, spec in enumerate(specs):
        if spec.alias_of:
            target = built[spec.alias_of]
            info = ImageInfo(**{**asdict(target), "name": spec.name, "alias_of": spec.alias_of,
                                "children": list(target.children)})
        else:
            top, children = gen.image(spec, number)
            info = ImageInfo(name=spec.name, digest=top.digest, media_type=top.media_type,
                             platforms=list(spec.platforms), kind=spec.kind, size=top.size,
                             bytes=sum(gen.writer.sizes[d] for d in top.reach),
                             children=[ChildInfo(c.digest, c.media_type, c.platform, c.size) for c in children])
            built[spec.name] = info
        infos.append(info)
    entries = [{"mediaType": i.media_type, "digest": i.digest, "size": i.size, "annotations": {REF_NAME: i.name}}
               for i in infos]
    return infos, entries


def _write_layout_files(out_dir: Path, entries: list[dict[str, Any]], seed: int) -> None:
    (out_dir / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries,
             "annotations": {SEED_ANNOTATION: str(seed)}}
    (out_dir / "index.json").write_text(json.dumps(index, indent=2) + "\n")


def _pins(specs: list[Spec]) -> dict[str, str]:
    """coredns is listed as ``path:tag@digest`` and pause as ``path@digest``, as operators sometimes pin."""
    pins = {"coredns/coredns:v1.10.1": "tag+digest", "pause:3.9": "digest"}
    names = {s.name for s in specs}
    return {name: how for name, how in pins.items() if name in names}


def _prefix(repo_prefix: str) -> str:
    return f"{repo_prefix.strip('/')}/" if repo_prefix.strip("/") else ""


# ----------------------------------------------------------------------------------------------------------
# Seeding a registry: plain httpx, nothing of the bundler package


class SeedError(RuntimeError):
    """The registry refused or garbled something the seeder sent; the message says what and why."""


@dataclass
class SeedResult:
    """What one ``seed_registry`` call did."""

    blobs_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_skipped: int = 0
    bytes_uploaded: int = 0
    manifests_pushed: int = 0
    tags_pushed: int = 0
    seconds: float = 0.0


@dataclass
class _Node:
    """A manifest read from the layout: raw bytes, media type, its child manifests and its blobs."""

    digest: str
    media_type: str
    data: bytes
    children: list["_Node"]
    blobs: list[tuple[str, int]]

    def all_blobs(self) -> Iterator[tuple[str, int]]:
        yield from self.blobs
        for child in self.children:
            yield from child.all_blobs()


def _read_layout(layout_dir: Path) -> list[tuple[str, str, _Node]]:
    """(repository path, tag, top manifest) for every entry of the layout's index.json that has a ref name."""
    layout_dir = Path(layout_dir)
    index = json.loads((layout_dir / "index.json").read_text())
    tags = []
    for entry in index["manifests"]:
        name = entry.get("annotations", {}).get(REF_NAME)
        if name:
            repo, tag = name.rsplit(":", 1)
            tags.append((repo, tag, _read_node(layout_dir, entry["digest"], entry["mediaType"])))
    return tags


def _read_node(layout_dir: Path, digest: str, media_type: str) -> _Node:
    data = (layout_dir / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()
    if hashlib.sha256(data).hexdigest() != digest.split(":", 1)[1]:
        raise SeedError(f"layout blob {digest} does not match its digest")
    body = json.loads(data)
    if media_type in INDEX_TYPES:
        children = [_read_node(layout_dir, d["digest"], d["mediaType"]) for d in body["manifests"]]
        return _Node(digest, media_type, data, children, [])
    blobs = [(d["digest"], d["size"]) for d in [body["config"], *body["layers"]]]
    return _Node(digest, media_type, data, [], blobs)


class RegistryAuth(httpx.Auth):
    """Username and password that answer whichever challenge a registry sends.

    ``Basic`` gets the credentials; ``Bearer`` (Distribution's token auth, Harbor) gets a token from the realm,
    asking ``pull,push`` for the repository in the URL (and ``pull`` on a mount's source), cached per scope
    set so that later requests go out already authorised: a streamed big blob cannot be sent twice, and
    the seeder always HEADs a blob before it uploads one.
    """

    def __init__(self, username: str, password: str, *, verify: ssl.SSLContext | bool = True) -> None:
        self._credentials = (username, password)
        self._basic_header = _basic_header(username, password)
        self._verify = verify
        self._use_basic = False
        self._tokens: dict[tuple[str, ...], str] = {}
        self._lock = threading.Lock()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        scopes = _scopes_of(request)
        self._authorise(request, scopes)
        response = yield request
        if response.status_code != 401:
            return
        scheme, params = _parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            self._use_basic = True
        elif scheme == "bearer":
            token = self._fetch_token(params, scopes)
            with self._lock:
                self._tokens[scopes] = token
        else:
            return
        self._authorise(request, scopes)
        yield request

    def _authorise(self, request: httpx.Request, scopes: tuple[str, ...]) -> None:
        with self._lock:
            token = self._tokens.get(scopes)
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        elif self._use_basic:
            request.headers["Authorization"] = self._basic_header

    def _fetch_token(self, challenge: dict[str, str], scopes: tuple[str, ...]) -> str:
        query = [("service", challenge["service"])] if "service" in challenge else []
        query += [("scope", scope) for scope in scopes or challenge.get("scope", "").split()]
        response = httpx.get(challenge["realm"], params=query, auth=self._credentials, verify=self._verify,
                             timeout=30, trust_env=False)
        if response.status_code != 200:
            raise SeedError(f"token service {challenge['realm']} answered {response.status_code}: "
                            f"{response.text[:200]}")
        body = response.json()
        return str(body.get("token") or body.get("access_token"))


def _scopes_of(request: httpx.Request) -> tuple[str, ...]:
    """What a seeder request needs: push to its repository, and pull from the source of a mount."""
    match = _REPO_PATH.match(request.url.path)
    if not match:
        return ()
    scopes = [f"repository:{match.group(1)}:pull,push"]
    source = request.url.params.get("from")
    if source:
        scopes.append(f"repository:{source}:pull")
    return tuple(scopes)


def _basic_header(username: str, password: str) -> str:
    request = httpx.Request("GET", "http://127.0.0.1/")
    return next(httpx.BasicAuth(username, password).auth_flow(request)).headers["Authorization"]


_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_REPO_PATH = re.compile(r"^/v2/(.+?)/(?:blobs|manifests|tags)/")


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest))


# One function per /v2/ URL: everything else calls these.
def _blob_url(repo: str, digest: str) -> str:
    return f"/v2/{repo}/blobs/{digest}"


def _upload_url(repo: str) -> str:
    return f"/v2/{repo}/blobs/uploads/"


def _manifest_url(repo: str, reference: str) -> str:
    return f"/v2/{repo}/manifests/{reference}"


def _client(base_url: str, ca_file: Path | str | None, auth: httpx.Auth | tuple[str, str] | None,
            jobs: int) -> httpx.Client:
    """One client for all threads; ``trust_env=False`` so that no proxy setting sends loopback traffic elsewhere."""
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
    if isinstance(auth, tuple):
        auth = RegistryAuth(*auth, verify=verify)
    return httpx.Client(base_url=base_url.rstrip("/"), verify=verify, auth=auth, trust_env=False,
                        timeout=httpx.Timeout(300, connect=10),
                        limits=httpx.Limits(max_connections=2 * jobs, max_keepalive_connections=2 * jobs))


def seed_registry(layout_dir: Path, base_url: str, *, ca_file: Path | str | None = None,
                  auth: httpx.Auth | tuple[str, str] | None = None, jobs: int = 4,
                  repo_prefix: str = "") -> SeedResult:
    """Push every tagged image of an OCI layout to the registry at ``base_url``, bytes exactly as stored.

    Order matters to Distribution: all blobs first (each digest handled by one thread, uploaded to the first
    repository needing it and mounted into the others, so no two uploads of one digest race), then per
    repository the child manifests by digest before their index, and the tag last. ``repo_prefix`` is put
    in front of every repository path. Blobs a repository already has (HEAD 200) are skipped.
    """
    started = time.monotonic()
    tags = [(_prefix(repo_prefix) + repo, tag, node) for repo, tag, node in _read_layout(layout_dir)]
    result = SeedResult()
    lock = threading.Lock()
    with _client(base_url, ca_file, auth, jobs) as client, ThreadPoolExecutor(max(1, jobs)) as pool:
        blob_dir = Path(layout_dir) / "blobs" / "sha256"
        uploads = _blob_repositories(tags)
        done = pool.map(lambda item: _push_blob(client, blob_dir, item[0], item[1][0], item[1][1], result, lock),
                        uploads.items())
        list(done)
        by_repo: dict[str, list[tuple[str, _Node]]] = {}
        for repo, tag, node in tags:
            by_repo.setdefault(repo, []).append((tag, node))
        list(pool.map(lambda item: _push_repository(client, item[0], item[1], result, lock), by_repo.items()))
    result.seconds = time.monotonic() - started
    return result


def _blob_repositories(tags: list[tuple[str, str, _Node]]) -> dict[str, tuple[int, list[str]]]:
    """digest -> (size, repositories needing it), in first-seen order."""
    needs: dict[str, tuple[int, list[str]]] = {}
    for repo, _, node in tags:
        for digest, size in node.all_blobs():
            repos = needs.setdefault(digest, (size, []))[1]
            if repo not in repos:
                repos.append(repo)
    return needs


def _push_blob(client: httpx.Client, blob_dir: Path, digest: str, size: int, repos: list[str],
               result: SeedResult, lock: threading.Lock) -> None:
    """Upload one digest to each repository needing it; after the first, offer a cross-repository mount."""
    source = ""
    for repo in repos:
        head = client.head(_blob_url(repo, digest))
        if head.status_code == 200:
            source = source or repo
            with lock:
                result.blobs_skipped += 1
            continue
        if head.status_code != 404:
            raise SeedError(f"HEAD {head.url}: {head.status_code}")
        mounted = _upload_blob(client, blob_dir / digest.split(":", 1)[1], repo, digest, size, source)
        source = source or repo
        with lock:
            if mounted:
                result.blobs_mounted += 1
            else:
                result.blobs_uploaded += 1
                result.bytes_uploaded += size


def _upload_blob(client: httpx.Client, path: Path, repo: str, digest: str, size: int, mount_from: str) -> bool:
    """POST for a session (a mount when ``mount_from``: 201 is done), then PUT the whole blob with ``?digest=``.

    Returns True for a mount. A 202 to a mount request is an ordinary upload session: continue it.
    """
    params = {"mount": digest, "from": mount_from} if mount_from else None
    start = client.post(_upload_url(repo), params=params)
    if mount_from and start.status_code == 201:
        _expect_digest(start, digest)
        return True
    _expect(start, 202)
    location = httpx.URL(urljoin(str(start.url), start.headers["Location"])).copy_merge_params({"digest": digest})
    body: bytes | Iterator[bytes] = path.read_bytes() if size <= SMALL_BLOB else _file_chunks(path)
    put = client.put(location, content=body,
                     headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
    _expect(put, 201)
    _expect_digest(put, digest)
    return False


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            yield chunk


def _push_repository(client: httpx.Client, repo: str, tags: list[tuple[str, _Node]], result: SeedResult,
                     lock: threading.Lock) -> None:
    pushed: set[str] = set()
    for tag, node in tags:
        for child in node.children:
            _push_children_first(client, repo, child, pushed, result, lock)
        _put_manifest(client, repo, tag, node)
        with lock:
            result.tags_pushed += 1


def _push_children_first(client: httpx.Client, repo: str, node: _Node, pushed: set[str], result: SeedResult,
                         lock: threading.Lock) -> None:
    """Depth first, by digest: Distribution refuses an index whose children it does not have."""
    if node.digest in pushed:
        return
    for child in node.children:
        _push_children_first(client, repo, child, pushed, result, lock)
    _put_manifest(client, repo, node.digest, node)
    pushed.add(node.digest)
    with lock:
        result.manifests_pushed += 1


def _put_manifest(client: httpx.Client, repo: str, reference: str, node: _Node) -> None:
    """Content-Type must equal the manifest's mediaType, or Distribution 2.8 reads it as schema1."""
    response = client.put(_manifest_url(repo, reference), content=node.data,
                          headers={"Content-Type": node.media_type})
    _expect(response, 201)
    _expect_digest(response, node.digest)


def _expect(response: httpx.Response, status: int) -> None:
    if response.status_code != status:
        raise SeedError(f"{response.request.method} {response.request.url}: expected {status}, "
                        f"got {response.status_code}: {response.text[:300]}")


def _expect_digest(response: httpx.Response, digest: str) -> None:
    served = response.headers.get("Docker-Content-Digest")
    if served and served != digest:
        raise SeedError(f"{response.request.method} {response.request.url}: registry says {served}, sent {digest}")


# ----------------------------------------------------------------------------------------------------------
# Command line

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": MiB, "g": 1024 * MiB, "t": 1024 * 1024 * MiB}


def parse_size(text: str) -> int:
    """``300M``, ``5MiB``, ``1.5G`` or a plain byte count; units are binary."""
    match = _SIZE_RE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 300M, 5MiB, 1G)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _generate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imageset.py [generate]", description="Generate a realistic image set as an OCI layout.",
        epilog="The other subcommand: 'imageset.py seed --layout DIR --to URL' pushes a layout into a registry "
               "(imageset.py seed --help).")
    parser.add_argument("--out", type=Path, required=True, help="empty or absent directory for the layout")
    parser.add_argument("--images", type=int, default=60, help=f"number of tagged images (at least {MIN_IMAGES})")
    parser.add_argument("--size", type=parse_size, default=300 * MiB, help="unique blob bytes, e.g. 300M")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--big-layer", type=parse_size, default=0, help="add one layer of this size")
    parser.add_argument("--list-host", default="", help="also write images.list for this registry host")
    parser.add_argument("--upgrade", action="store_true",
                        help="the set a month later: calico v3.26.4 -> v3.26.5, cilium rebuilt (for delta bundles)")
    return parser


def _seed_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imageset.py seed", description="Push an OCI layout into a registry.")
    parser.add_argument("--layout", type=Path, required=True)
    parser.add_argument("--to", required=True, help="registry base URL, e.g. http://127.0.0.1:5000")
    parser.add_argument("--ca-file", type=Path)
    parser.add_argument("--user")
    parser.add_argument("--password", default=os.environ.get("IMAGESET_PASSWORD"),
                        help="or set IMAGESET_PASSWORD")
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--repo-prefix", default="")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["seed"]:
        return _main_seed(_seed_parser().parse_args(argv[1:]))
    if argv[:1] == ["generate"]:
        argv = argv[1:]
    return _main_generate(_generate_parser().parse_args(argv))


def _main_generate(args: argparse.Namespace) -> int:
    try:
        image_set = generate(args.out, images=args.images, total_size=args.size, seed=args.seed,
                             big_layer=args.big_layer, upgrade=args.upgrade)
    except (ValueError, FileExistsError) as error:
        print(f"imageset: {error}", file=sys.stderr)
        return 2
    if args.list_host:
        (args.out / "images.list").write_text(image_set.image_list(args.list_host))
    print(f"{len(image_set.images)} images, seed {image_set.seed}: {image_set.unique_bytes} unique bytes, "
          f"{image_set.image_bytes_sum} summed over images (sharing {image_set.sharing:.0%}) in {args.out}")
    return 0


def _main_seed(args: argparse.Namespace) -> int:
    auth = (args.user, args.password or "") if args.user else None
    try:
        result = seed_registry(args.layout, args.to, ca_file=args.ca_file, auth=auth, jobs=args.jobs,
                               repo_prefix=args.repo_prefix)
    except (SeedError, httpx.HTTPError, OSError) as error:
        print(f"imageset seed: {error}", file=sys.stderr)
        return 1
    print(f"seeded {args.to}: {result.tags_pushed} tags, {result.manifests_pushed} child manifests, "
          f"{result.blobs_uploaded} blobs uploaded ({result.bytes_uploaded} bytes), {result.blobs_mounted} mounted, "
          f"{result.blobs_skipped} already there, in {result.seconds:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
