"""Split bundles: ``NAME.000``, ``NAME.001`` … are a plain byte split of the one-file bundle ``NAME``.

Removable media (FAT32 holds no file of 4 GiB) need a bundle in pieces. The pieces stay a byte
split, so ``cat NAME.* | zstd -d | tar x`` still works; readers see one file through ``VolumeFile``,
which maps offsets to volumes. A set is found from its first volume, any volume, the bare ``NAME``
or the volumes given one by one, and checked before use: numbers without gaps, every volume but
the last of one size, the sidecar's volume list, the seek table at the very end, and at the first
frame start inside every volume a zstd frame header declaring what the seek table says (a volume
out of order, duplicated or from another bundle fails that). A problem names the volume
(``IncompleteVolumeSetError``).
"""

from __future__ import annotations

import bisect
import hashlib
import io
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Protocol, Union

import zstandard

from bundler.bundle.frames import FRAME_SIZE, MAX_FRAME_COMPRESSED, ZSTD_MAGIC
from bundler.bundle.pagecache import open_read_once
from bundler.bundle.seektable import SKIPPABLE_MAGIC, SeekTable, SeekTableError, parse_seek_table
from bundler.bundle.sidecar import format_sidecar, read_sidecar_lines, sidecar_path
from bundler.errors import IncompleteVolumeSetError, InputError, LocalIOError
from bundler.words import counted

if TYPE_CHECKING:
    from typing_extensions import Buffer, Self

__all__ = [
    "MAX_VOLUMES",
    "MIN_SPLIT",
    "BundleFiles",
    "BundlePath",
    "VolumeDigests",
    "VolumeFile",
    "VolumeWriter",
    "WritableFile",
    "bundle_from_paths",
    "check_split",
    "check_volume_digests",
    "existing_outputs",
    "find_bundle",
    "open_bundle",
    "remove_stale",
    "volume_path",
]

MAX_VOLUMES = 1000
"""Volume numbers have three digits: ``.000`` to ``.999``."""
MIN_SPLIT = 4096
"""Smallest split size accepted: smaller volumes are a typo, not a medium."""
_VOLUME_RE = re.compile(r"^(.+)\.([0-9]{3})$")
_FRAME_HEADER_MAX = 18
"""Longest zstd frame header: enough bytes to read a frame's declared content size."""


@dataclass(frozen=True)
class BundleFiles:
    """Where a bundle's bytes are: the file ``name``, or its ``volumes`` in order (``name`` then need
    not exist; the sidecar is ``name.sha256`` either way)."""

    name: Path
    volumes: tuple[Path, ...] = ()

    @property
    def parts(self) -> tuple[Path, ...]:
        return self.volumes or (self.name,)

    @property
    def sidecar(self) -> Path:
        return sidecar_path(self.name)

    def __str__(self) -> str:
        return str(self.volumes[0] if self.volumes else self.name)


BundlePath = Union[str, "os.PathLike[str]", BundleFiles]


def volume_path(name: Path, number: int) -> Path:
    return name.with_name(f"{name.name}.{number:03d}")


def _volume_number(path: Path) -> tuple[Path, int] | None:
    match = _VOLUME_RE.match(path.name)
    return (path.with_name(match.group(1)), int(match.group(2))) if match else None


def find_bundle(path: BundlePath) -> BundleFiles:
    """The bundle at ``path``: a file, a volume (the set is found beside it), or a bare ``NAME`` whose
    volumes exist. ``LocalIOError`` when there is nothing; ``IncompleteVolumeSetError`` for a gap."""
    if isinstance(path, BundleFiles):
        return path
    path = Path(path)
    volume = _volume_number(path)
    if volume is None and path.is_file():
        return BundleFiles(path)
    name = volume[0] if volume else path
    found = _volumes_beside(name)
    if not found:
        raise LocalIOError(f"{path}: no such file" + ("" if volume else f" (and no volumes {name.name}.000…)"))
    return _checked_set(name, found)


def bundle_from_paths(paths: Sequence[Path]) -> BundleFiles:
    """The bundle named on a command line: one path (see ``find_bundle``) or every volume of one set,
    in any order and directories (one volume per USB stick works)."""
    if len(paths) == 1:
        return find_bundle(paths[0])
    numbered: dict[int, Path] = {}
    names: dict[int, Path] = {}
    for path in map(Path, paths):
        volume = _volume_number(path)
        if volume is None:
            raise InputError(f"{path}: several files given, but this is not a volume NAME.NNN")
        name, number = volume
        if number in numbered:
            raise IncompleteVolumeSetError(f"volume {path.name} is given twice ({numbered[number]} and {path})")
        numbered[number], names[number] = path, name
    if len({name.name for name in names.values()}) > 1:
        listed = ", ".join(sorted({name.name for name in names.values()}))
        raise InputError(f"the files given are volumes of different bundles: {listed}")
    return _checked_set(names[min(names)], numbered)


def _volumes_beside(name: Path) -> dict[int, Path]:
    directory = name.parent
    try:
        entries = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return {}  # nothing there: whoever opens or creates the file reports it
    except OSError as error:
        raise LocalIOError(f"cannot list {directory}: {error.strerror or error}") from None
    found = {}
    for entry in entries:
        match = _VOLUME_RE.match(entry)
        if match and match.group(1) == name.name:
            found[int(match.group(2))] = directory / entry
    return found


def _checked_set(name: Path, numbered: dict[int, Path]) -> BundleFiles:
    """Numbers from 000 without gaps, and exactly the volumes the sidecar lists (when there is one)."""
    listed = _sidecar_volume_count(name)
    count = max(numbered) + 1 if listed is None else max(listed, max(numbered) + 1)
    for number in range(count):
        if number not in numbered:
            of = f"{counted(listed, 'volume')} listed in {sidecar_path(name).name}" if listed else counted(count, "volume")
            raise IncompleteVolumeSetError(f"volume {volume_path(name, number).name} is missing ({of})")
    if listed is not None and count > listed:
        extra = volume_path(name, listed).name
        raise IncompleteVolumeSetError(
            f"volume {extra} is not listed in {sidecar_path(name).name} (left over from another bundle?)"
        )
    return BundleFiles(name, tuple(numbered[number] for number in range(count)))


def _sidecar_volume_count(name: Path) -> int | None:
    """How many volumes the sidecar lists (``None`` without a sidecar); it must list NAME.000, .001 … in order."""
    lines = read_sidecar_lines(sidecar_path(name))
    if lines is None:
        return None
    for number, (_, listed) in enumerate(lines):
        volume = _volume_number(Path(listed))
        if volume is None or volume[1] != number:
            raise IncompleteVolumeSetError(
                f"{sidecar_path(name).name}: line {number + 1} names {listed!r}, expected volume .{number:03d}"
            )
    return len(lines)


# --- reading ---------------------------------------------------------------------------------


class VolumeFile(io.RawIOBase, BinaryIO):
    """The volumes of one bundle read as one seekable file; one volume is open at a time.

    Not thread-safe (the bundle reader serialises access to a shared file).
    """

    def __init__(self, files: BundleFiles) -> None:
        super().__init__()
        self.files = files
        sizes = []
        for path in files.volumes:
            try:
                sizes.append(os.stat(path).st_size)
            except OSError as error:
                raise LocalIOError(f"cannot read {path}: {error.strerror or error}") from None
        self.sizes = tuple(sizes)
        self.starts = tuple(sum(sizes[:i]) for i in range(len(sizes)))
        self.size = sum(sizes)
        self._position = 0
        self._open: tuple[int, io.BufferedReader] | None = None
        self._digests: VolumeDigests | None = None

    def track_digests(self) -> VolumeDigests:
        """Hash each volume as the set is read front to back (how ``verify`` reads it)."""
        self._digests = VolumeDigests(self.sizes)
        return self._digests

    @property
    def name(self) -> str:
        return str(self.files)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise OSError(22, "negative seek position")
        self._position = base + offset
        return self._position

    def readinto(self, buffer: Buffer) -> int:
        """Fill ``buffer`` from as many volumes as it takes; short only at the end of the set."""
        view = memoryview(buffer)
        done = 0
        while done < len(view) and self._position < self.size:
            done += self._read_volume(view[done:])
        return done

    def _read_volume(self, view: memoryview) -> int:
        """Bytes from the volume holding the current position, at most to its end."""
        number = bisect.bisect_right(self.starts, self._position) - 1
        file = self._volume(number)
        offset = self._position - self.starts[number]
        want = min(len(view), self.sizes[number] - offset)
        try:
            file.seek(offset)
            count = file.readinto(view[:want])
        except OSError as error:
            raise LocalIOError(f"cannot read {self.files.volumes[number]}: {error.strerror or error}") from None
        if not count:
            raise IncompleteVolumeSetError(f"volume {self.files.volumes[number].name} shrank while being read")
        if self._digests is not None and self._digests.position == self._position:
            self._digests.update(view[:count])
        self._position += count
        return count

    def read_at(self, offset: int, size: int) -> bytes:
        """The bytes at ``offset`` (fewer only at the end of the set)."""
        self.seek(offset)
        return self.read(size)

    def _volume(self, number: int) -> io.BufferedReader:
        if self._open is not None and self._open[0] == number:
            return self._open[1]
        self._close_volume()
        path = self.files.volumes[number]
        try:
            file = open_read_once(path)
        except OSError as error:
            raise LocalIOError(f"cannot open {path}: {error.strerror or error}") from None
        self._open = (number, file)
        return file

    def _close_volume(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None

    def close(self) -> None:
        self._close_volume()
        super().close()


def open_bundle(path: BundlePath) -> BinaryIO:
    """A bundle's bytes as one file: the file itself, or a ``VolumeFile`` over a checked volume set."""
    files = find_bundle(path)
    if not files.volumes:
        try:
            return open_read_once(files.name)
        except OSError as error:
            raise LocalIOError(f"cannot open {files.name}: {error.strerror or error}") from None
    file = VolumeFile(files)
    try:
        _check_sizes(file)
        _check_frames(file)
        file.seek(0)
    except BaseException:
        file.close()
        raise
    return file


def _check_sizes(file: VolumeFile) -> None:
    """Every volume but the last has the same size; the last is not larger and not empty."""
    volumes, sizes = file.files.volumes, file.sizes
    if len(sizes) > 1:
        full = max(sizes[:-1])
        for path, size in zip(volumes[:-1], sizes[:-1]):
            if size != full:
                raise IncompleteVolumeSetError(f"volume {path.name} is truncated: {size} bytes, others have {full}")
        if sizes[-1] > full:
            raise IncompleteVolumeSetError(
                f"volume {volumes[-1].name} has {sizes[-1]} bytes, more than the {full} of the volumes before it"
            )
    if sizes[-1] == 0:
        raise IncompleteVolumeSetError(f"volume {volumes[-1].name} is empty")


def _check_frames(file: VolumeFile) -> None:
    """The set ends with the seek table, and each volume holds the frame start the table puts there."""
    last = file.files.volumes[-1]
    try:
        table = parse_seek_table(file.read_at, file.size, max_compressed=MAX_FRAME_COMPRESSED,
                                 max_decompressed=FRAME_SIZE)
    except SeekTableError as error:
        _diagnose_by_sidecar(file, damaged_too=False)
        raise IncompleteVolumeSetError(
            f"volume {last.name} does not end the bundle ({error}): it is truncated, or a volume after it is missing"
        ) from None
    for path, start, size in zip(file.files.volumes, file.starts, file.sizes):
        if not _frame_start_fits(file, table, start, start + size):
            _diagnose_by_sidecar(file, damaged_too=True)
            raise IncompleteVolumeSetError(
                f"volume {path.name} does not hold the bytes that belong at its place "
                "(out of order, duplicated, or from another bundle)"
            )


def _diagnose_by_sidecar(file: VolumeFile, *, damaged_too: bool) -> None:
    """A set known to be wrong: with a sidecar, hash every volume to say exactly which one is where
    (and, with ``damaged_too``, which one is damaged)."""
    if not file.files.sidecar.exists():
        return
    digests = file.track_digests()
    file.seek(0)
    while file.read(1 << 20):
        pass
    damaged = check_volume_digests(file.files, digests.hexdigests())  # raises for a misplaced volume
    if damaged and damaged_too:
        raise IncompleteVolumeSetError(damaged)


def _frame_start_fits(file: VolumeFile, table: SeekTable, start: int, end: int) -> bool:
    """At the first frame (or the seek table) starting in ``[start, end)``: the header the table expects."""
    number = bisect.bisect_left(table.compressed_offsets, start)
    if number < table.frame_count and table.compressed_offsets[number] < end:
        header = file.read_at(table.compressed_offsets[number], _FRAME_HEADER_MAX)
        if header[:4] != ZSTD_MAGIC:
            return False
        try:
            declared = zstandard.get_frame_parameters(header).content_size
        except zstandard.ZstdError:
            return False
        return declared == table.decompressed_sizes[number]
    table_start = file.size - table.table_size
    if start <= table_start < end:
        return file.read_at(table_start, 4) == SKIPPABLE_MAGIC.to_bytes(4, "little")
    return True  # a volume inside one frame: nothing to compare without decompressing


class VolumeDigests:
    """sha256 of each volume, fed the bytes of the whole set in order (as ``verify`` reads them)."""

    def __init__(self, sizes: Sequence[int]) -> None:
        self._left = list(sizes)
        self._hashes = [hashlib.sha256() for _ in sizes]
        self._current = 0
        self.position = 0
        self.size = sum(sizes)

    @property
    def complete(self) -> bool:
        return self.position == self.size

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        self.position += len(view)
        while view and self._current < len(self._hashes):
            take = min(len(view), self._left[self._current])
            self._hashes[self._current].update(view[:take])
            self._left[self._current] -= take
            view = view[take:]
            if not self._left[self._current]:
                self._current += 1

    def hexdigests(self) -> list[str]:
        return [digest.hexdigest() for digest in self._hashes]


def check_volume_digests(files: BundleFiles, actual: Sequence[str]) -> str | None:
    """Compare each volume's sha256 with its sidecar line: ``None`` when all match, a message for a
    damaged volume; ``IncompleteVolumeSetError`` for one holding another volume's bytes."""
    lines = read_sidecar_lines(files.sidecar) or []
    expected = [digest for digest, _ in lines]
    for path, want, got in zip(files.volumes, expected, actual):
        if got == want:
            continue
        if got in expected:
            other = files.volumes[list(expected).index(got)].name
            how = "duplicated" if list(actual).count(got) > 1 else "out of order"
            raise IncompleteVolumeSetError(f"volume {path.name} holds the bytes of {other} ({how})")
        return f"volume {path.name}: sha256 is {got}, but {files.sidecar.name} says {want}"
    return None


# --- writing ---------------------------------------------------------------------------------


class WritableFile(Protocol):
    """A file written front to back: what a bundle, or one of its volumes, is written to."""

    def write(self, data: bytes | memoryview, /) -> int: ...

    def flush(self) -> None: ...

    def fileno(self) -> int: ...


class _Temp(Protocol):
    """The writer's temp file: written, synced, then renamed into place by ``commit``."""

    @property
    def file(self) -> WritableFile: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None: ...

    def sync(self) -> None: ...

    def commit(self, *, overwrite: bool) -> None: ...


class VolumeWriter:
    """A write-only file that cuts the bundle into temp volumes of ``limit`` bytes (the last one
    shorter); ``commit`` renames them all into place, leaving the block any other way removes them.

    ``new_temp`` makes the temp file of one volume (the writer's own crash-safe kind).
    """

    def __init__(self, name: Path, limit: int, new_temp: Callable[[Path], _Temp]) -> None:
        if limit < 1:
            raise InputError("volume size must be positive")
        self.name = Path(name)
        self.limit = limit
        self._new_temp = new_temp
        self._temps: list[_Temp] = []
        self._hashes: list[hashlib._Hash] = []
        self._filled = 0

    @property
    def file(self) -> VolumeWriter:
        return self

    @property
    def volumes(self) -> tuple[Path, ...]:
        return tuple(volume_path(self.name, number) for number in range(len(self._temps)))

    def __enter__(self) -> Self:
        return self

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data)
        while view:
            if not self._temps or self._filled == self.limit:
                self._next_volume()
            piece = view[: self.limit - self._filled]
            self._temps[-1].file.write(piece)
            self._hashes[-1].update(piece)
            self._filled += len(piece)
            view = view[len(piece):]
        return len(data)

    def _next_volume(self) -> None:
        if len(self._temps) == MAX_VOLUMES:
            raise InputError(f"more than {MAX_VOLUMES} volumes: choose a larger split size")
        if self._temps:
            self._temps[-1].sync()
        temp = self._new_temp(volume_path(self.name, len(self._temps)))
        temp.__enter__()
        self._temps.append(temp)
        self._hashes.append(hashlib.sha256())
        self._filled = 0

    def flush(self) -> None:
        if self._temps:
            self._temps[-1].file.flush()

    def fileno(self) -> int:
        """The last volume's descriptor, for the final fsync (earlier ones were synced when full)."""
        if not self._temps:
            self._next_volume()
        return self._temps[-1].file.fileno()

    def sidecar_bytes(self) -> bytes:
        """The ``sha256sum`` lines of every volume, in order."""
        return b"".join(format_sidecar(h.hexdigest(), p.name) for h, p in zip(self._hashes, self.volumes))

    def commit(self, *, overwrite: bool) -> None:
        """Rename every volume into place; on failure take back the ones already renamed."""
        committed: list[Path] = []
        try:
            for temp, path in zip(self._temps, self.volumes):
                temp.commit(overwrite=overwrite)
                committed.append(path)
        except BaseException:
            for path in committed:
                _remove(path)
            raise

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        for temp in self._temps:
            temp.__exit__(kind, error, tb)


def check_split(split: int, payload: int) -> None:
    """Refuse a split size that is a typo, or that ``payload`` bytes would need over 1000 volumes of."""
    if split < MIN_SPLIT:
        raise InputError(f"split size {split} is too small (at least {MIN_SPLIT} bytes)")
    if payload // (split - 1) >= MAX_VOLUMES:
        raise InputError(f"split size {split} would need more than {MAX_VOLUMES} volumes")


def existing_outputs(name: Path) -> list[Path]:
    """The file ``name`` and its volumes, those that exist: what writing ``name`` would replace."""
    volumes = [path for _, path in sorted(_volumes_beside(name).items())]
    return ([name] if os.path.lexists(name) else []) + volumes


def remove_stale(name: Path, *, volumes: int) -> None:
    """After ``name`` was written over an older bundle: remove what the new one did not replace (the
    single file when it was split into ``volumes``; volumes numbered ``volumes`` and up)."""
    if volumes and os.path.lexists(name):
        _remove(name)
    for number, path in sorted(_volumes_beside(name).items()):
        if number >= volumes:
            _remove(path)


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        raise LocalIOError(f"cannot remove {path}: {error.strerror or error}") from None
