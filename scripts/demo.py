"""The end-to-end demo behind ``bash scripts/demo.sh``: an air-gap transfer on one machine, checked.

    python3 scripts/demo.py [--images 60] [--size 100M] [--seed 1] [--keep]

Starts a source and a target Docker Distribution on 127.0.0.1, generates a kubespray-shaped image set
(multi-arch Docker lists and OCI indexes, attestations, shared base layers) with scripts/imageset.py,
pushes it into the source and writes ``images.list``. Then it runs the real CLI, printing each command
and its output: ``imgbundle pack``, ``list``, ``verify``, ``unpack --to TARGET/mirror``. Finally every
reference is read back from the target with ``skopeo inspect --raw`` and its digest compared with the
source's; any difference makes the exit status non-zero.
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import imageset
import localregistry
from bench import Expected, imgbundle_command, imgbundle_origin, imgbundle_refs

PREFIX = "mirror"
MiB = imageset.MiB


class DemoError(RuntimeError):
    """A step failed or the target differs from the source; the message says which."""


def imgbundle(args: list[str], work: Path) -> None:
    """Print the command as a user types it, then run it with its output going straight to ours."""
    print(f"\n$ imgbundle {shlex.join(args)}", flush=True)
    code = subprocess.call([*imgbundle_command(), *args], cwd=work)
    if code != 0:
        raise DemoError(f"imgbundle {args[0]} failed with exit status {code}")


def skopeo_digest(host: str, path: str) -> str:
    """``sha256:`` of the raw manifest skopeo reads for ``host/path`` (plain HTTP on loopback)."""
    proc = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{host}/{path}"],
                          capture_output=True, check=False)
    if proc.returncode != 0:
        return "skopeo: " + proc.stderr.decode(errors="replace").strip().splitlines()[-1]
    return "sha256:" + hashlib.sha256(proc.stdout).hexdigest()


def check_target(host: str, expected: list[Expected]) -> list[str]:
    """Every reference under ``host/mirror`` as skopeo sees it; returns the differences."""
    def one(item: Expected) -> str:
        got = skopeo_digest(host, f"{PREFIX}/{item.path}")
        return "" if got == item.digest else f"{host}/{PREFIX}/{item.path}: {got}, source has {item.digest}"

    with ThreadPoolExecutor(4) as pool:
        return [problem for problem in pool.map(one, expected) if problem]


def demo(work: Path, images: int, size: int, seed: int) -> None:
    started = time.monotonic()
    print(imgbundle_origin(), flush=True)
    print(f"generating {images} images ({size / MiB:.0f} MiB of blobs, seed {seed}) in {work / 'set'}", flush=True)
    image_set = imageset.generate(work / "set", images=images, total_size=size, seed=seed)
    with ExitStack() as stack:
        source = stack.enter_context(localregistry.local_registry(work / "source"))
        target = stack.enter_context(localregistry.local_registry(work / "target"))
        seeded = imageset.seed_registry(image_set.layout, source.url)
        (work / "images.list").write_text(image_set.image_list(source.host))
        print(f"source registry {source.host}: {seeded.tags_pushed} tags, {seeded.bytes_uploaded / MiB:.0f} MiB "
              f"(sharing {image_set.sharing:.0%} of layer bytes between images); target registry {target.host}; "
              f"image list in {work / 'images.list'}", flush=True)
        imgbundle(["pack", "-f", "images.list", "-o", "demo.tar.zst", "--no-cache"], work)
        imgbundle(["list", "demo.tar.zst"], work)
        imgbundle(["verify", "demo.tar.zst"], work)
        imgbundle(["unpack", "demo.tar.zst", "--to", f"{target.host}/{PREFIX}"], work)
        expected = imgbundle_refs(image_set)
        print(f"\nchecking {len(expected)} references on {target.host}/{PREFIX} with skopeo inspect --raw ...",
              flush=True)
        problems = check_target(target.host, expected)
    if problems:
        raise DemoError(f"{len(problems)} of {len(expected)} references differ:\n  " + "\n  ".join(problems))
    print(f"OK: all {len(expected)} references on the target have the source digests "
          f"(demo took {time.monotonic() - started:.0f}s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--size", type=imageset.parse_size, default=100 * MiB, help="unique blob bytes, e.g. 100M")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the working directory (printed at the end)")
    args = parser.parse_args(argv)
    if shutil.which("skopeo") is None:
        print("demo: skopeo is missing (bash scripts/demo.sh installs it)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="imgbundle-demo-"))
    try:
        demo(work, args.images, args.size, args.seed)
    except (DemoError, localregistry.RegistryStartError, imageset.SeedError) as error:
        print(f"demo: FAILED: {error}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
