"""Benchmark imgbundle against skopeo's offline flow and against the wire floor, in one run.

    python3 scripts/bench.py --shape usual|biglayer|small --runs 5 --out /tmp/imgbundle-bench

Each shape is its own run (``Bench.usual_flows``, ``Bench.small_flows``): ``usual`` is a kubespray-shaped set of
60 images and 1 GiB, ``biglayer`` the same plus one 2 GiB layer, ``small`` 2,000 one-layer images in 50
repositories, timed against request floors (the same requests from plain threads, at the fastest of
``--floor-jobs``) instead of skopeo and the byte floors.

Why: users pick an air-gap tool on two numbers, the size of what goes on the USB stick and the time the
two ends take. Every run times, against the same seeded source registry:

1. skopeo as operators script it today (kubespray-style ``images.sh save/load``): per image
   ``skopeo sync --all --preserve-digests --src docker --dest dir``, then ``tar | zstd -T0 -3``; on the far
   side ``zstd -d | tar x`` and per image ``skopeo sync --all --preserve-digests --src dir --dest docker``
   into a fresh target A. skopeo cannot address ``name:tag@digest``, so those refs go as ``name@digest``;
   each image goes to ``images/<repository parent>`` so that nested paths survive the round trip.
2. ``imgbundle pack --no-cache`` (a cold pack, like skopeo's), ``verify``, ``unpack`` into a fresh target B.
3. The floor: a plain parallel GET of every unique blob (hashing as it reads), and a plain parallel
   monolithic upload (POST, PUT ?digest=) of them into a fresh target C, both with ``--jobs`` threads.
4. The push floor: the fewest requests after which a fresh target D holds every image (each blob uploaded
   once and mounted into the other repositories that need it, then every manifest PUT once), with the
   same plain threads and no checks. The upload floor skips that work, and any correct push must do it:
   ``push floor / upload floor`` is how much of the unpack target the registry's share alone uses up.
5. The push+HEAD floor: the push floor into a fresh target E plus the HEADs unpack makes so that a re-run
   skips what is there (each blob in its first repository, each top manifest by digest and by tag).

6. ``imgbundle serve`` (a section of its own, ``--serve-only`` runs just it): the set packed once, then per
   run ``skopeo copy --all --preserve-digests`` of every reference into ``dir:`` from serve and from the
   source Distribution (which serves the same images from its disk), the order swapped every other run;
   ``ctr content fetch --plain-http --all-platforms`` of every reference from serve into a containerd of its
   own, each image it records checked against the source digest; the seconds from spawning ``serve`` to its listening line, beside ``imgbundle --version`` (the
   interpreter and imports); and the peak RSS (VmHWM) of a fresh server while 8 connections GET and hash
   every blob at once. Appended to ``bench.md``, and written to ``bench-serve.json``.

The targets are then checked: every reference resolves to the source digest (a wrong result is not a
result). Each phase runs as a child process under GNU time (its ``wait4``): CPU seconds of the process
and its children, and the peak RSS of the largest of them (for ``tar | zstd`` the larger of the two);
the registries' own CPU is read from ``/proc`` around each phase. The phase's CPU and theirs, divided by
the cores, is its CPU bound: the least time it could take here. The table shows each ratio at the bounds
too; where even that misses a target, better overlap cannot meet it, only less CPU (ours or the
registry's) can. Dirty pages are flushed (``sync``) before each phase; imgbundle's fsync of its bundle
is on its clock, skopeo's flow never fsyncs. imgbundle's modules are byte-compiled first, as an
installed copy's are (``compile_imgbundle``). MiB/s is the bytes a phase moved: skopeo's per-image
``dir/`` trees, the unique blobs for imgbundle and the floor. Medians over ``--runs`` go to
``bench.json`` and ``bench.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import hashlib
import http.client
import importlib.util
import json
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

import httpx

import imageset
import localcontainerd
import localregistry

MiB = 1024 * 1024
T = TypeVar("T")
READ_SIZE = MiB
MANIFEST_ACCEPT = imageset.MANIFEST_ACCEPT
GNU_TIME = "/usr/bin/time"
SKOPEO = ["skopeo", "--insecure-policy"]
"""As in the field notes: no signature policy is configured on these machines."""

RSS_TARGETS = {
    "pack peak RSS MiB": ("<", 150.0),
    "verify peak RSS MiB": ("<", 150.0),
    "unpack peak RSS MiB": ("<", 150.0),
}
TARGETS = {
    "bundle / skopeo tar.zst": ("<=", 0.52),
    "skopeo pull+tar / pack": (">=", 7.0),
    "pack / GET floor": ("<=", 1.3),
    "skopeo extract+push / unpack": (">=", 4.0),
    "unpack / upload floor": ("<=", 1.3),
    "verify / hash floor speed": (">=", 0.8),
    "verify MiB/s": (">=", 500.0),
    **RSS_TARGETS,
}
"""The targets of the usual and the big-layer shapes."""
SMALL_TARGETS = {
    "pack / request floor": ("<=", 1.5),
    "unpack / request floor": ("<=", 1.5),
    **RSS_TARGETS,
}
"""The targets of the small-image shape."""
SHAPES = {
    "usual": {"images": 60, "size": 1024 * MiB, "big_layer": 0},
    "biglayer": {"images": 60, "size": 1024 * MiB, "big_layer": 2048 * MiB},
    "small": {"images": 2000, "size": 16 * 1024, "big_layer": 0},
}
"""Each shape's defaults; for ``small``, ``size`` is the mean layer size of one image."""
FLOOR_JOBS = (4, 8, 16, 32)
"""Concurrencies the request floors of the small shape try; the fastest counts."""


# ----------------------------------------------------------------------------------------------------------
# Measuring child processes


@dataclass
class Phase:
    """One timed step: wall seconds, CPU seconds and peak RSS of its child processes, bytes it moved."""

    name: str
    seconds: float = 0.0
    cpu: float = 0.0
    peak_rss_kib: int = 0
    bytes: int = 0
    output_bytes: int = 0
    registry_cpu: float = 0.0
    commands: int = 0

    @property
    def mib_s(self) -> float:
        return self.bytes / MiB / self.seconds if self.seconds else 0.0

    @property
    def cpu_bound(self) -> float:
        """The fewest seconds this phase could take here: all CPU it and the registries burnt, spread
        perfectly over every core. A ratio of two bounds is what no scheduling can beat."""
        return (self.cpu + self.registry_cpu) / (os.cpu_count() or 1)


class BenchError(RuntimeError):
    """A step failed or a target holds the wrong content; the message says which."""


def _cpu_of(pid: int) -> float:
    """utime + stime of a live process, from /proc (the registries are not our waited children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(name: str, commands: Sequence[Sequence[str]], *, log: Path, moved: int,
            registries: Sequence[localregistry.RegistryProcess] = ()) -> Phase:
    """Run ``commands`` one after another under GNU time; a failing command aborts with its log tail.

    Why GNU time and not our own ``os.wait4``: a child forked from this (large) Python process reports
    our RSS as its own peak, because Linux carries the pre-exec high-water mark over; ``time`` is small.
    """
    phase = Phase(name, bytes=moved, commands=len(commands))
    usage_file = log.with_name(log.name + ".rusage")
    os.sync()  # the previous phase's dirty pages are flushed now, not on this phase's clock
    registry_before = sum(_cpu_of(r.pid) for r in registries)
    started = time.monotonic()
    with log.open("ab") as sink:
        for argv in commands:
            sink.write(("$ " + " ".join(argv) + "\n").encode())
            sink.flush()
            code = subprocess.call([GNU_TIME, "-f", "%M %U %S", "-o", str(usage_file), *argv], stdout=sink,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            peak_kib, user, system = usage_file.read_text().split()[-3:]
            phase.cpu += float(user) + float(system)
            phase.peak_rss_kib = max(phase.peak_rss_kib, int(peak_kib))
            if code != 0:
                raise BenchError(f"{name}: {argv[0]} exited {code}; see {log}:\n{_tail(log)}")
    phase.seconds = time.monotonic() - started
    phase.registry_cpu = sum(_cpu_of(r.pid) for r in registries) - registry_before
    return phase


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------------------------------
# The image set and what each target must hold


@dataclass(frozen=True)
class Expected:
    """A reference path on a target (``repo:tag`` or ``repo@digest``) and the digest it must resolve to."""

    path: str
    digest: str


def ensure_set(sets_dir: Path, images: int, size: int, big_layer: int, seed: int) -> imageset.ImageSet:
    """Reuse a set generated earlier with the same parameters, else generate it."""
    directory = sets_dir / f"i{images}-s{size}-b{big_layer}-seed{seed}"
    if (directory / "imageset.json").exists():
        return imageset.ImageSet.load(directory)
    shutil.rmtree(directory, ignore_errors=True)
    print(f"generating {images} images, {size / MiB:.0f} MiB (+{big_layer / MiB:.0f} MiB big layer) in {directory}",
          flush=True)
    return imageset.generate(directory, images=images, total_size=size, seed=seed, big_layer=big_layer)


def ensure_small_set(sets_dir: Path, images: int, repositories: int, layer_size: int, seed: int
                     ) -> imageset.ImageSet:
    """Reuse a small-image set generated earlier with the same parameters, else generate it."""
    directory = sets_dir / f"small-i{images}-r{repositories}-l{layer_size}-seed{seed}"
    if (directory / "imageset.json").exists():
        return imageset.ImageSet.load(directory)
    shutil.rmtree(directory, ignore_errors=True)
    print(f"generating {images} small images in {repositories} repositories in {directory}", flush=True)
    return imageset.generate_small(directory, images=images, repositories=repositories, layer_size=layer_size,
                                   seed=seed)


def skopeo_refs(image_set: imageset.ImageSet) -> list[Expected]:
    """What skopeo can be asked for: ``name:tag@digest`` pins become ``name@digest``."""
    out = []
    for info in image_set.images:
        pinned = image_set.pinned.get(info.name)
        out.append(Expected(f"{info.repository}@{info.digest}" if pinned else info.name, info.digest))
    return out


def imgbundle_refs(image_set: imageset.ImageSet) -> list[Expected]:
    """What ``unpack`` must leave: the tag (also of a tag+digest pin) and, for digest-only pins, the digest."""
    return [Expected(f"{i.repository}@{i.digest}" if image_set.pinned.get(i.name) == "digest" else i.name, i.digest)
            for i in image_set.images]


def check_target(base_url: str, expected: Sequence[Expected], what: str) -> None:
    """Every reference on the target serves a manifest whose sha256 is the source digest."""
    wrong = []
    with httpx.Client(base_url=base_url, trust_env=False, timeout=30) as client:
        for item in expected:
            repo, ref = _split(item.path)
            response = client.get(f"/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT})
            got = "sha256:" + hashlib.sha256(response.content).hexdigest() if response.status_code == 200 else ""
            if got != item.digest:
                wrong.append(f"{item.path}: {response.status_code} {got or response.text[:80]}")
    if wrong:
        raise BenchError(f"{what}: {len(wrong)} of {len(expected)} references wrong: {wrong[:5]}")


def _split(path: str) -> tuple[str, str]:
    if "@" in path:
        repo, digest = path.split("@", 1)
        return repo, digest
    repo, tag = path.rsplit(":", 1)
    return repo, tag


def unique_blobs(image_set: imageset.ImageSet) -> list[tuple[str, int, str]]:
    """(digest, size, a repository holding it) for every config and layer blob, each once."""
    tags = imageset._read_layout(image_set.layout)  # the seeder's own walk of the layout
    return [(digest, size, repos[0]) for digest, (size, repos) in imageset._blob_repositories(tags).items()]


# ----------------------------------------------------------------------------------------------------------
# The floors: plain GETs, monolithic uploads and a minimal push with http.client, one connection per thread


def _parallel(jobs: int, items: Sequence[T], work: Callable[[http.client.HTTPConnection, T], None], host: str) -> None:
    """Run ``work(connection, item)`` over ``items`` in order on ``jobs`` threads, each with its own keep-alive
    connection."""
    todo: queue.Queue[T] = queue.Queue()
    for item in items:
        todo.put(item)
    errors: list[BaseException] = []

    def worker() -> None:
        connection = http.client.HTTPConnection(host, timeout=300, blocksize=READ_SIZE)
        try:
            while not errors:
                try:
                    item = todo.get_nowait()
                except queue.Empty:
                    return
                work(connection, item)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _biggest_first(blobs: Sequence[tuple[str, int, str]]) -> list[tuple[str, int, str]]:
    """No straggler at the end."""
    return sorted(blobs, key=lambda blob: -blob[1])


def _request(connection: http.client.HTTPConnection, method: str, path: str, status: int, *,
             body: bytes | BinaryIO | None = None, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    connection.request(method, path, body=body, headers=headers or {"Content-Length": "0"})
    response = connection.getresponse()
    response.read()
    if response.status != status:
        raise BenchError(f"{method} {path}: {response.status}, expected {status}")
    return response


def _upload(connection: http.client.HTTPConnection, layout: Path, repo: str, digest: str, size: int) -> None:
    """POST, then PUT ?digest= with the whole blob: Distribution 2.8 ignores a body on the POST."""
    started = _request(connection, "POST", f"/v2/{repo}/blobs/uploads/", 202)
    location = urllib.parse.urlsplit(started.headers["Location"])
    with (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).open("rb") as body:
        _request(connection, "PUT", f"{location.path}?{location.query}&digest={digest}", 201, body=body,
                 headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})


def floor_get(host: str, blobs: Sequence[tuple[str, int, str]], jobs: int) -> None:
    def get(connection: http.client.HTTPConnection, item: tuple[str, int, str]) -> None:
        digest, size, repo = item
        connection.request("GET", f"/v2/{repo}/blobs/{digest}")
        response = connection.getresponse()
        if response.status != 200:
            raise BenchError(f"GET {digest}: {response.status}")
        sha, buffer, received = hashlib.sha256(), bytearray(READ_SIZE), 0
        view = memoryview(buffer)
        while n := response.readinto(view):
            sha.update(view[:n])
            received += n
        if received != size or "sha256:" + sha.hexdigest() != digest:
            raise BenchError(f"GET {digest}: wrong content")

    _parallel(jobs, _biggest_first(blobs), get, host)


def floor_put(host: str, layout: Path, blobs: Sequence[tuple[str, int, str]], jobs: int) -> None:
    def put(connection: http.client.HTTPConnection, item: tuple[str, int, str]) -> None:
        digest, size, repo = item
        _upload(connection, layout, repo, digest, size)

    _parallel(jobs, _biggest_first(blobs), put, host)


def floor_push(host: str, layout: Path, jobs: int, *, heads: bool = False) -> None:
    """The fewest requests that leave every image on the target, and nothing else: each blob uploaded once
    into the first repository needing it and mounted into the others, then every platform manifest by
    digest, then every top manifest by its tag (which stores it by digest too). No HEADs, no checks.

    With ``heads``, also the HEADs that let a re-run skip what is there, as unpack makes them: each blob in
    the first repository needing it, each top manifest by digest and by tag (all absent on a fresh target)."""
    tops = imageset._read_layout(layout)  # the seeder's own walk of the layout
    holders = imageset._blob_repositories(tops)

    def place(connection: http.client.HTTPConnection, item: tuple[str, int, str]) -> None:
        digest, size, _ = item
        first, *others = holders[digest][1]
        if heads:
            _request(connection, "HEAD", f"/v2/{first}/blobs/{digest}", 404)
        _upload(connection, layout, first, digest, size)
        for repo in others:
            _request(connection, "POST", f"/v2/{repo}/blobs/uploads/?mount={digest}&from={first}", 201)

    def put_manifest(connection: http.client.HTTPConnection, item: tuple[str, str, imageset._Node]) -> None:
        repo, reference, node = item
        if heads and reference != node.digest:  # a top manifest, put by its tag
            for name in (node.digest, reference):
                _request(connection, "HEAD", f"/v2/{repo}/manifests/{name}", 404)
        _request(connection, "PUT", f"/v2/{repo}/manifests/{reference}", 201, body=node.data,
                 headers={"Content-Type": node.media_type, "Content-Length": str(len(node.data))})

    blobs = [(digest, size, repos[0]) for digest, (size, repos) in holders.items()]
    _parallel(jobs, _biggest_first(blobs), place, host)
    children = {(repo, child.digest): child for repo, _, top in tops for child in top.children}
    _parallel(jobs, [(repo, digest, child) for (repo, digest), child in children.items()], put_manifest, host)
    _parallel(jobs, tops, put_manifest, host)


def floor_pull(host: str, layout: Path, jobs: int) -> None:
    """The requests a pull of every image needs and no more: each tag resolved with one GET carrying the Accept
    list, then each child manifest, config and layer once (the first image that reaches a blob fetches it)."""
    seen: set[str] = set()
    lock = threading.Lock()

    def first_time(digest: str) -> bool:
        with lock:
            if digest in seen:
                return False
            seen.add(digest)
            return True

    def fetch(connection: http.client.HTTPConnection, path: str) -> bytes:
        connection.request("GET", path, headers={"Accept": MANIFEST_ACCEPT})
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise BenchError(f"GET {path}: {response.status}")
        return body

    def pull(connection: http.client.HTTPConnection, item: tuple[str, str, imageset._Node]) -> None:
        repo, tag, _ = item
        pending = [json.loads(fetch(connection, f"/v2/{repo}/manifests/{tag}"))]
        while pending:
            body = pending.pop()
            for child in body.get("manifests", []):
                if first_time(child["digest"]):
                    pending.append(json.loads(fetch(connection, f"/v2/{repo}/manifests/{child['digest']}")))
            for blob in [body["config"], *body["layers"]] if "config" in body else []:
                if first_time(blob["digest"]):
                    data = fetch(connection, f"/v2/{repo}/blobs/{blob['digest']}")
                    if "sha256:" + hashlib.sha256(data).hexdigest() != blob["digest"]:
                        raise BenchError(f"GET {blob['digest']}: wrong content")

    _parallel(jobs, imageset._read_layout(layout), pull, host)


def floor_hash(layout: Path, blobs: Sequence[tuple[str, int, str]]) -> None:
    """sha256 (OpenSSL's, through hashlib) of every unique blob file, one process per core, largest first.

    Each file is read from the disk, as verify reads the bundle (which pack left out of the page cache): its
    cached pages are dropped first, so the floor is the disk or the hash, whichever is slower, and never a
    read from memory that verify cannot have."""
    paths = [layout / "blobs" / "sha256" / digest.split(":", 1)[1] for digest, _, _ in _biggest_first(blobs)]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for path, digest in zip(paths, pool.map(_hash_file, paths)):
            if digest != path.name:
                raise BenchError(f"{path}: hashes to {digest}")


def _hash_file(path: Path) -> str:
    sha, buffer = hashlib.sha256(), bytearray(READ_SIZE)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as file:
        os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        while n := file.readinto(view):
            sha.update(view[:n])
    return sha.hexdigest()


FLOORS = ("floor-get", "floor-put", "floor-push", "floor-push-heads", "floor-pull", "floor-hash")
"""The child commands ``_floor_main`` runs."""


def _floor_main(argv: list[str]) -> int:
    """``bench.py floor-KIND HOST LAYOUT JOBS`` (KIND one of ``FLOORS``): a floor runs as a child so that it is
    measured alike."""
    kind, host, layout, jobs = argv[0], argv[1], Path(argv[2]), int(argv[3])
    if kind.startswith("floor-push"):
        floor_push(host, layout, jobs, heads=kind == "floor-push-heads")
        return 0
    if kind == "floor-pull":
        floor_pull(host, layout, jobs)
        return 0
    blobs = unique_blobs(imageset.ImageSet.load(layout))
    if kind == "floor-get":
        floor_get(host, blobs, jobs)
    elif kind == "floor-hash":
        floor_hash(layout, blobs)
    else:
        floor_put(host, layout, blobs, jobs)
    return 0


# ----------------------------------------------------------------------------------------------------------
# One run: the three flows


@dataclass
class Bench:
    image_set: imageset.ImageSet
    source: localregistry.RegistryProcess
    list_file: Path
    work: Path
    jobs: int
    imgbundle: list[str]
    shape: str = "usual"
    floor_jobs: Sequence[int] = FLOOR_JOBS
    unique: int = field(init=False)
    """Config and layer bytes, each blob once: what the floor moves."""

    def __post_init__(self) -> None:
        self.unique = sum(size for _, size, _ in unique_blobs(self.image_set))

    def run(self, number: int) -> dict[str, Phase]:
        run_dir = self.work / f"run-{number}"
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        try:
            return self.small_flows(run_dir) if self.shape == "small" else self.usual_flows(run_dir)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)

    def usual_flows(self, run_dir: Path) -> dict[str, Phase]:
        """The usual and the big-layer shapes: skopeo's flow, imgbundle's, and the byte floors."""
        return {**self.skopeo_flow(run_dir), **self.imgbundle_flow(run_dir), **self.floor_flow(run_dir)}

    def small_flows(self, run_dir: Path) -> dict[str, Phase]:
        """The small-image shape: imgbundle's flow and the request floors (skopeo, one process per image,
        would take most of an hour here and is not what this shape asks about)."""
        return {**self.imgbundle_flow(run_dir), **self.request_floors(run_dir)}

    def _target(self, stack: ExitStack, run_dir: Path, name: str) -> localregistry.RegistryProcess:
        return stack.enter_context(localregistry.local_registry(run_dir / name))

    def skopeo_flow(self, run_dir: Path) -> dict[str, Phase]:
        refs = skopeo_refs(self.image_set)
        images, extracted, tarball = run_dir / "images", run_dir / "extracted", run_dir / "images.tar.zst"
        log = run_dir / "skopeo.log"
        pulls = [[*SKOPEO, "sync", "--all", "--preserve-digests", "--src-tls-verify=false", "--src", "docker",
                  "--dest", "dir", f"{self.source.host}/{ref.path}", str(images / _parent(ref.path))] for ref in refs]
        with ExitStack() as stack:
            target = self._target(stack, run_dir, "target-a")
            pull = measure("skopeo pull", pulls, log=log, moved=0, registries=[self.source])
            pull.bytes = pull.output_bytes = _tree_bytes(images)
            tar = measure("tar + zstd", [_bash(f"tar -C {images} -cf - . | zstd -T0 -3 -q -o {tarball}")],
                          log=log, moved=pull.bytes)
            tar.output_bytes = tarball.stat().st_size
            shutil.rmtree(images)
            extracted.mkdir()
            extract = measure("zstd -d + tar x", [_bash(f"zstd -d -q -c {tarball} | tar -C {extracted} -xf -")],
                              log=log, moved=pull.bytes)
            tarball.unlink()
            pushes = [[*SKOPEO, "sync", "--all", "--preserve-digests", "--dest-tls-verify=false", "--src", "dir",
                       "--dest", "docker", str(extracted / ref.path), _join(target.host, _parent(ref.path))]
                      for ref in refs]
            push = measure("skopeo push", pushes, log=log, moved=pull.bytes, registries=[target])
            check_target(target.url, refs, "skopeo's target")
        return {p.name: p for p in (pull, tar, extract, push)}

    def imgbundle_flow(self, run_dir: Path) -> dict[str, Phase]:
        bundle, log = run_dir / "bundle.tar.zst", run_dir / "imgbundle.log"
        jobs = ["--jobs", str(self.jobs)]
        with ExitStack() as stack:
            target = self._target(stack, run_dir, "target-b")
            pack = measure("imgbundle pack", [[*self.imgbundle, "pack", "-q", "--no-cache", "-f", str(self.list_file),
                                               "-o", str(bundle), *jobs]],
                           log=log, moved=self.image_set.unique_bytes, registries=[self.source])
            pack.output_bytes = bundle.stat().st_size
            verify = measure("imgbundle verify", [[*self.imgbundle, "verify", "-q", str(bundle)]], log=log,
                             moved=self.image_set.unique_bytes)
            unpack = measure("imgbundle unpack", [[*self.imgbundle, "unpack", "-q", str(bundle), "--to", target.host,
                                                   *jobs]],
                             log=log, moved=self.image_set.unique_bytes, registries=[target])
            check_target(target.url, imgbundle_refs(self.image_set), "imgbundle's target")
        return {p.name: p for p in (pack, verify, unpack)}

    def floor_flow(self, run_dir: Path) -> dict[str, Phase]:
        me = [sys.executable, str(Path(__file__).resolve())]
        log, layout = run_dir / "floor.log", str(self.image_set.layout)

        def floor(name: str, kind: str, registry: localregistry.RegistryProcess) -> Phase:
            return measure(name, [[*me, kind, registry.host, layout, str(self.jobs)]], log=log, moved=self.unique,
                           registries=[registry])

        with ExitStack() as stack:
            phases = [floor("GET floor", "floor-get", self.source),
                      floor("hash floor", "floor-hash", self.source),
                      floor("upload floor", "floor-put", self._target(stack, run_dir, "target-c"))]
            for name, kind, directory in (("push floor", "floor-push", "target-d"),
                                          ("push+HEAD floor", "floor-push-heads", "target-e")):
                target = self._target(stack, run_dir, directory)
                phases.append(floor(name, kind, target))
                check_target(target.url, imgbundle_refs(self.image_set), f"the {name}'s target")
        return {p.name: p for p in phases}


    def request_floors(self, run_dir: Path) -> dict[str, Phase]:
        """The pull floor (every tag, manifest and blob GET once) and the push+HEAD floor (unpack's HEAD, POST and
        PUT sequence), each at every concurrency of ``floor_jobs``; the fastest of each is the request floor."""
        me = [sys.executable, str(Path(__file__).resolve())]
        log, layout = run_dir / "floor.log", str(self.image_set.layout)
        phases: dict[str, Phase] = {}
        for jobs in self.floor_jobs:
            phases[f"pull floor j{jobs}"] = measure(f"pull floor j{jobs}", [[*me, "floor-pull", self.source.host, layout,
                                                    str(jobs)]], log=log, moved=self.unique, registries=[self.source])
        for jobs in self.floor_jobs:
            name = f"push+HEAD floor j{jobs}"
            with localregistry.local_registry(run_dir / f"target-j{jobs}") as target:
                phases[name] = measure(name, [[*me, "floor-push-heads", target.host, layout, str(jobs)]], log=log,
                                       moved=self.unique, registries=[target])
                check_target(target.url, imgbundle_refs(self.image_set), f"the {name}'s target")
        for floor, prefix in (("pull request floor", "pull floor j"), ("push request floor", "push+HEAD floor j")):
            best = min((phase for name, phase in phases.items() if name.startswith(prefix)), key=lambda p: p.seconds)
            phases[floor] = Phase(**{**asdict(best), "name": floor})
        return phases


def _bash(script: str) -> list[str]:
    return ["bash", "-o", "pipefail", "-c", script]


def _parent(path: str) -> str:
    """``a/b/c:tag`` -> ``a/b``; ``pause@sha256:..`` -> ``.``: where skopeo sync puts (or finds) the image."""
    repo, _ = _split(path)
    return str(Path(repo).parent)


def _join(host: str, parent: str) -> str:
    return host if parent == "." else f"{host}/{parent}"


# ----------------------------------------------------------------------------------------------------------
# Summary


def ratios(phases: dict[str, Phase], shape: str) -> dict[str, float]:
    p = phases
    times = {name: phase.seconds for name, phase in p.items()}
    shaped = small_ratios(times) if shape == "small" else {
        "bundle / skopeo tar.zst": p["imgbundle pack"].output_bytes / p["tar + zstd"].output_bytes,
        **time_ratios(times),
    }
    return {
        **shaped,
        "verify MiB/s": p["imgbundle verify"].mib_s,
        "pack peak RSS MiB": p["imgbundle pack"].peak_rss_kib / 1024,
        "verify peak RSS MiB": p["imgbundle verify"].peak_rss_kib / 1024,
        "unpack peak RSS MiB": p["imgbundle unpack"].peak_rss_kib / 1024,
    }


def time_ratios(t: dict[str, float]) -> dict[str, float]:
    """The speed targets from one time per phase: measured seconds, or each phase's CPU bound."""
    return {
        "skopeo pull+tar / pack": (t["skopeo pull"] + t["tar + zstd"]) / t["imgbundle pack"],
        "pack / GET floor": t["imgbundle pack"] / t["GET floor"],
        "skopeo extract+push / unpack": (t["zstd -d + tar x"] + t["skopeo push"]) / t["imgbundle unpack"],
        "unpack / upload floor": t["imgbundle unpack"] / t["upload floor"],
        "unpack / push floor": t["imgbundle unpack"] / t["push floor"],
        "push floor / upload floor": t["push floor"] / t["upload floor"],
        "unpack / push+HEAD floor": t["imgbundle unpack"] / t["push+HEAD floor"],
        "push+HEAD floor / upload floor": t["push+HEAD floor"] / t["upload floor"],
        "verify / hash floor speed": t["hash floor"] / t["imgbundle verify"],
    }


def small_ratios(t: dict[str, float]) -> dict[str, float]:
    """The small-image shape's speed targets, from one time per phase."""
    return {
        "pack / request floor": t["imgbundle pack"] / t["pull request floor"],
        "unpack / request floor": t["imgbundle unpack"] / t["push request floor"],
    }


def median_phases(runs: list[dict[str, Phase]]) -> dict[str, Phase]:
    out = {}
    for name in runs[0]:
        values = [run[name] for run in runs]
        med = Phase(name)
        for attr in ("seconds", "cpu", "peak_rss_kib", "bytes", "output_bytes", "registry_cpu"):
            setattr(med, attr, statistics.median(getattr(v, attr) for v in values))
        out[name] = med
    return out


def markdown(phases: dict[str, Phase], ratio: dict[str, float], per_run: list[dict[str, float]],
             meta: dict[str, object]) -> str:
    shape = str(meta["shape"])
    lines = [f"shape {shape}: {meta['images']} images, {meta['unique_bytes'] / MiB:.0f} MiB unique "
             f"({meta['image_bytes_sum'] / MiB:.0f} MiB summed over images), big layer "
             f"{meta['big_layer'] / MiB:.0f} MiB; medians of {meta['runs']} runs; {meta['machine']}", "",
             "| phase | seconds | MiB/s | peak RSS MiB | CPU s | registry CPU s | CPU bound s | output bytes |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for phase in phases.values():
        output = f"{phase.output_bytes:,.0f}" if phase.output_bytes else ""
        lines.append(f"| {phase.name} | {phase.seconds:.2f} | {phase.mib_s:.0f} | {phase.peak_rss_kib / 1024:.0f} | "
                     f"{phase.cpu:.2f} | {phase.registry_cpu:.2f} | {phase.cpu_bound:.2f} | {output} |")
    bound_of = small_ratios if shape == "small" else time_ratios
    bounds = bound_of({name: phase.cpu_bound for name, phase in phases.items()})
    targets = SMALL_TARGETS if shape == "small" else TARGETS
    lines += ["", "| ratio | measured | target | | runs, lowest to highest | met in | of the CPU bounds |",
              "|---|---:|---:|---|---:|---:|---:|"]
    for name, value in ratio.items():
        runs = sorted(r[name] for r in per_run)
        bound = f"{bounds[name]:.2f}" if name in bounds else ""
        target, verdict, met = "", "", ""
        if name in targets:
            op, goal = targets[name]
            target, verdict = f"{op} {goal:g}", "met" if _meets(value, op, goal) else "missed"
            met = f"{sum(_meets(r, op, goal) for r in runs)} of {len(runs)}"
        lines.append(f"| {name} | {value:.2f} | {target} | {verdict} | {runs[0]:.2f} to {runs[-1]:.2f} | {met} | "
                     f"{bound} |")
    return "\n".join(lines) + "\n"


def _meets(value: float, op: str, goal: float) -> bool:
    return {"<=": value <= goal, ">=": value >= goal, "<": value < goal}[op]


def machine() -> str:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPU {cpu}, {memory:.0f} GiB RAM, {platform.system()} {platform.release()}, " \
           f"Python {platform.python_version()}"


def imgbundle_command() -> list[str]:
    """``python -m bundler`` with this script's Python: the copy its environment imports (PYTHONPATH first,
    then the installed one), never whichever ``imgbundle`` is first on PATH (an old virtualenv, a pyenv shim)."""
    return [sys.executable, "-m", "bundler"]


def imgbundle_origin() -> str:
    """Which imgbundle the scripts run, for the first line they print."""
    spec = importlib.util.find_spec("bundler")
    where = spec.submodule_search_locations[0] if spec and spec.submodule_search_locations else "not installed"
    return f"imgbundle: {sys.executable} -m bundler, from {where}"


def compile_imgbundle() -> None:
    """Byte-compile the ``bundler`` package, as pip does when it installs one. Run from a checkout under
    PYTHONDONTWRITEBYTECODE (containers set it), every command would compile imgbundle's modules anew, CPU
    that no installed copy pays (measured in docs/benchmark.md)."""
    spec = importlib.util.find_spec("bundler")
    if spec is not None and spec.submodule_search_locations:
        compileall.compile_dir(spec.submodule_search_locations[0], quiet=1)


# ----------------------------------------------------------------------------------------------------------
# imgbundle serve: the bundle as the registry, against Distribution serving the same images from its disk

SERVE_TARGETS = {
    "serve pull / Distribution pull": ("<=", 1.0),
    "serve start-up s": ("<", 1.0),
    "serve peak RSS MiB, 8 clients": ("<", 150.0),
}


@dataclass
class ServeRun:
    """One run of the serve section: the phases, the start-up seconds and the server's peak RSS."""

    phases: dict[str, Phase]
    startup: float
    version: float
    """Seconds of ``imgbundle --version``: the interpreter and imports, the part of start-up no bundle adds."""
    peak_rss_mib: float

    def ratios(self) -> dict[str, float]:
        t = self.phases
        return {"serve pull / Distribution pull": t["skopeo pull from serve"].seconds
                / t["skopeo pull from Distribution"].seconds,
                "serve start-up s": self.startup,
                "imgbundle --version s": self.version,
                "serve peak RSS MiB, 8 clients": self.peak_rss_mib}


@dataclass
class ServeProcess:
    process: subprocess.Popen[str]
    host: str
    startup: float
    """Seconds from the spawn of ``imgbundle serve`` to its line saying that it listens."""

    def peak_rss_mib(self) -> float:
        """The server's high-water mark so far (VmHWM): it runs on, so it is read from /proc, not wait4."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise BenchError("no VmHWM for imgbundle serve")


@contextlib.contextmanager
def serving(imgbundle: list[str], bundle: Path, log: Path) -> Iterator[ServeProcess]:
    """``imgbundle serve -q BUNDLE`` on a free port until the block ends."""
    with log.open("ab") as sink:
        started = time.monotonic()
        process = subprocess.Popen([*imgbundle, "serve", "-q", str(bundle), "--listen", "127.0.0.1:0"],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=sink, text=True)
        assert process.stdout is not None
        banner = process.stdout.readline()
        startup = time.monotonic() - started
        try:
            if not banner.startswith("serving "):
                raise BenchError(f"imgbundle serve did not start: {banner!r}; see {log}:\n{_tail(log)}")
            yield ServeProcess(process, banner.rsplit("://", 1)[1].strip(), startup)
        finally:
            process.terminate()
            process.wait(timeout=30)


def serve_pull(name: str, host: str, refs: Sequence[Expected], dest: Path, *, log: Path, moved: int,
               server_pid: int) -> Phase:
    """``skopeo copy --all`` of every reference into ``dest``, checked, with the server's CPU beside it."""
    pulls = [[*SKOPEO, "copy", "--all", "--preserve-digests", "--src-tls-verify=false", f"docker://{host}/{ref.path}",
              f"dir:{dest / str(n)}"] for n, ref in enumerate(refs)]
    dest.mkdir()
    before = _cpu_of(server_pid)
    phase = measure(name, pulls, log=log, moved=moved)
    phase.registry_cpu = _cpu_of(server_pid) - before
    wrong = [ref.path for n, ref in enumerate(refs)
             if "sha256:" + hashlib.sha256((dest / str(n) / "manifest.json").read_bytes()).hexdigest() != ref.digest]
    if wrong:
        raise BenchError(f"{name}: {len(wrong)} references pulled with another digest: {wrong[:5]}")
    shutil.rmtree(dest)
    return phase


def containerd_fetch(host: str, refs: Sequence[Expected], directory: Path, *, log: Path, moved: int,
                     server_pid: int) -> Phase:
    """``ctr content fetch --plain-http --all-platforms`` of every reference from serve into a containerd of its
    own; the image each fetch records must carry the source digest (containerd checks every blob as it ingests)."""
    namespace = "bench"
    with localcontainerd.local_containerd(directory) as daemon:
        fetches = [["ctr", "--address", str(daemon.socket), "-n", namespace, "content", "fetch", "--plain-http",
                    "--all-platforms", f"{host}/{ref.path}"] for ref in refs]
        before = _cpu_of(server_pid)
        phase = measure("ctr fetch from serve", fetches, log=log, moved=moved)
        phase.registry_cpu = _cpu_of(server_pid) - before
        listed = daemon.ctr("-n", namespace, "images", "ls").stdout.splitlines()[1:]
    fetched = {columns[0]: columns[2] for columns in (line.split() for line in listed)}
    wrong = [f"{ref.path}: {fetched.get(f'{host}/{ref.path}', 'not recorded')}" for ref in refs
             if fetched.get(f"{host}/{ref.path}") != ref.digest]
    if wrong:
        raise BenchError(f"ctr fetch from serve: {len(wrong)} of {len(refs)} references with another digest: "
                         f"{wrong[:5]}")
    return phase


def serve_run(bench: Bench, bundle: Path, number: int) -> ServeRun:
    """Serve against Distribution: every reference pulled by skopeo from each (the order swapped every other
    run), the start-up, and the peak RSS of a fresh server while 8 connections GET every blob at once."""
    run_dir = bench.work / f"serve-{number}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    refs, log = skopeo_refs(bench.image_set), run_dir / "serve.log"
    me = [sys.executable, str(Path(__file__).resolve())]
    started = time.monotonic()
    subprocess.run([*bench.imgbundle, "--version"], stdout=subprocess.DEVNULL, check=True)
    version = time.monotonic() - started
    with serving(bench.imgbundle, bundle, log) as served:
        startup = served.startup
        pulls = [("skopeo pull from serve", served.host, served.process.pid),
                 ("skopeo pull from Distribution", bench.source.host, bench.source.pid)]
        phases = {}
        for name, host, pid in pulls if number % 2 else reversed(pulls):
            phases[name] = serve_pull(name, host, refs, run_dir / "pulled", log=log, moved=bench.unique,
                                      server_pid=pid)
        fetch = containerd_fetch(served.host, refs, run_dir / "ctd", log=log, moved=bench.unique,
                                 server_pid=served.process.pid)
        phases[fetch.name] = fetch
    with serving(bench.imgbundle, bundle, log) as served:
        before = _cpu_of(served.process.pid)
        clients = measure("serve GET, 8 clients", [[*me, "floor-get", served.host, str(bench.image_set.layout), "8"]],
                          log=log, moved=bench.unique)
        clients.registry_cpu = _cpu_of(served.process.pid) - before
        phases[clients.name] = clients
        peak = served.peak_rss_mib()
    shutil.rmtree(run_dir, ignore_errors=True)
    return ServeRun(phases, startup, version, peak)


def serve_section(bench: Bench, runs: int) -> tuple[int, list[ServeRun]]:
    """Pack the set once into a bundle, then ``runs`` serve runs; returns the bundle's size too."""
    bundle = bench.work / "serve-bundle.tar.zst"
    bundle.parent.mkdir(parents=True, exist_ok=True)
    measure("imgbundle pack (for serve)", [[*bench.imgbundle, "pack", "-q", "--force", "-f", str(bench.list_file),
                                            "-o", str(bundle), "--jobs", str(bench.jobs)]],
            log=bench.work / "serve-pack.log", moved=0, registries=[bench.source])
    results = []
    for number in range(1, runs + 1):
        result = serve_run(bench, bundle, number)
        results.append(result)
        print(f"serve run {number}: " + ", ".join(f"{p.name} {p.seconds:.1f}s" for p in result.phases.values())
              + f", start-up {result.startup:.2f}s (--version {result.version:.2f}s), peak RSS "
              f"{result.peak_rss_mib:.0f} MiB", flush=True)
    size = bundle.stat().st_size
    bundle.unlink()
    return size, results


def serve_markdown(bundle_size: int, results: list[ServeRun]) -> str:
    """The serve section of bench.md: phase medians, then each ratio against its target."""
    phases = median_phases([r.phases for r in results])
    lines = ["", f"## imgbundle serve (bundle of {bundle_size / MiB:.0f} MiB; medians of {len(results)} runs)", "",
             "| phase | seconds | MiB/s | server CPU s |", "|---|---:|---:|---:|"]
    lines += [f"| {p.name} | {p.seconds:.2f} | {p.mib_s:.0f} | {p.registry_cpu:.2f} |" for p in phases.values()]
    lines += ["", "| measure | median | target | | runs, lowest to highest | met in |", "|---|---:|---:|---|---:|---:|"]
    per_run = [r.ratios() for r in results]
    for name in per_run[0]:
        values = sorted(r[name] for r in per_run)
        value, target, verdict, met = statistics.median(values), "", "", ""
        if name in SERVE_TARGETS:
            op, goal = SERVE_TARGETS[name]
            target, verdict = f"{op} {goal:g}", "met" if _meets(value, op, goal) else "missed"
            met = f"{sum(_meets(v, op, goal) for v in values)} of {len(values)}"
        lines.append(f"| {name} | {value:.2f} | {target} | {verdict} | {values[0]:.2f} to {values[-1]:.2f} | {met} |")
    return "\n".join(lines) + "\n"


def report_serve(out: Path, bundle_size: int, results: list[ServeRun]) -> None:
    """Appends the serve section to bench.md and writes it to bench-serve.json."""
    table = serve_markdown(bundle_size, results)
    with (out / "bench.md").open("a") as md:
        md.write(table)
    data = {"bundle_bytes": bundle_size, "targets": SERVE_TARGETS,
            "runs": [{"phases": {k: asdict(v) for k, v in r.phases.items()}, "startup": r.startup,
                      "version": r.version, "peak_rss_mib": r.peak_rss_mib, "ratios": r.ratios()} for r in results]}
    (out / "bench-serve.json").write_text(json.dumps(data, indent=2) + "\n")
    print(table + f"written: {out / 'bench-serve.json'}")


# ----------------------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="usual",
                        help="usual: 60 images, 1 GiB; biglayer: the same plus one 2 GiB layer; small: 2,000 images "
                             "of one small layer each in 50 repositories")
    parser.add_argument("--images", type=int, help="images in the set (default: the shape's)")
    parser.add_argument("--size", type=imageset.parse_size,
                        help="unique blob bytes, e.g. 1G; for the small shape, the mean layer size (default: the shape's)")
    parser.add_argument("--big-layer", type=imageset.parse_size, help="add one layer this big, e.g. 2G")
    parser.add_argument("--repositories", type=int, default=50, help="repositories of the small shape")
    parser.add_argument("--floor-jobs", default=",".join(map(str, FLOOR_JOBS)),
                        help="concurrencies the small shape's request floors try, e.g. 4,8,16")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=4, help="parallel transfers for imgbundle and the floor")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "imgbundle-bench",
                        help="sets, registries, logs and results (bench.json, bench.md); not the repository")
    parser.add_argument("--serve-only", action="store_true", help="only the imgbundle serve section")
    parser.add_argument("--no-serve", action="store_true",
                        help="skip the imgbundle serve section (for the small shape it copies every image twice per run)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in FLOORS:
        return _floor_main(argv)
    args = _parser().parse_args(argv)
    for name, default in SHAPES[args.shape].items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    for tool in ("skopeo", "zstd", "tar", GNU_TIME):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} is missing (.ci/install-deps installs it)")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.shape == "small":
        image_set = ensure_small_set(out / "sets", args.images, args.repositories, args.size, args.seed)
    else:
        image_set = ensure_set(out / "sets", args.images, args.size, args.big_layer, args.seed)
    compile_imgbundle()
    print(imgbundle_origin(), flush=True)
    with localregistry.local_registry(out / "source" / image_set.layout.name) as source:  # kept: re-seeding skips blobs
        seeded = imageset.seed_registry(image_set.layout, source.url, jobs=args.jobs)
        print(f"source {source.host}: {seeded.tags_pushed} tags, {seeded.bytes_uploaded / MiB:.0f} MiB seeded in "
              f"{seeded.seconds:.1f}s", flush=True)
        list_file = out / "images.list"
        list_file.write_text(image_set.image_list(source.host))
        bench = Bench(image_set, source, list_file, out / "work", args.jobs, imgbundle_command(), args.shape,
                      [int(jobs) for jobs in args.floor_jobs.split(",")])
        runs = []
        for number in range(1, 0 if args.serve_only else args.runs + 1):
            phases = bench.run(number)
            runs.append(phases)
            print(f"run {number}: " + ", ".join(f"{p.name} {p.seconds:.1f}s" for p in phases.values()), flush=True)
        code = _report(out, args, image_set, runs) if runs else 0
        if args.no_serve:
            return code
        bundle_size, served = serve_section(bench, args.runs)
    if not runs:
        (out / "bench.md").write_text(f"serve section only; {machine()}\n")
    report_serve(out, bundle_size, served)
    return code


def _report(out: Path, args: argparse.Namespace, image_set: imageset.ImageSet, runs: list[dict[str, Phase]]) -> int:
    per_run = [ratios(run, args.shape) for run in runs]
    ratio = {name: statistics.median(r[name] for r in per_run) for name in per_run[0]}
    medians = median_phases(runs)
    meta: dict[str, object] = {"shape": args.shape, "images": len(image_set.images), "unique_bytes": image_set.unique_bytes,
                               "image_bytes_sum": image_set.image_bytes_sum, "big_layer": image_set.big_layer,
                               "runs": len(runs), "jobs": args.jobs, "machine": machine(),
                               "command": "python3 scripts/bench.py " + " ".join(sys.argv[1:])}
    table = markdown(medians, ratio, per_run, meta)
    (out / "bench.md").write_text(table)
    data = {"meta": meta, "median": {k: asdict(v) for k, v in medians.items()}, "ratios": ratio,
            "runs": [{k: asdict(v) for k, v in run.items()} for run in runs], "run_ratios": per_run}
    (out / "bench.json").write_text(json.dumps(data, indent=2) + "\n")
    print(table + f"\nwritten: {out / 'bench.md'}, {out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BenchError, localregistry.RegistryStartError, imageset.SeedError) as error:
        print(f"bench: {error}", file=sys.stderr)
        sys.exit(1)
