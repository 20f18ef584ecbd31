"""What a push learns about the target and makes true there: typed facts, their outcomes, and the HEAD checks.

A fact is a blob, a manifest or a tag in one repository of the target. The job runner settles each
with an ``Outcome``, or with the ``ImgbundleError`` that stopped it; a fact nobody settled is open.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

from bundler.digest import Digest
from bundler.errors import ImgbundleError, UnreachableError
from bundler.jobs import Job, JobRunner
from bundler.progress import Progress
from bundler.stores import Placement, WriteStore

__all__ = [
    "BlobFact",
    "Fact",
    "ManifestFact",
    "Outcome",
    "PushJob",
    "PushRunner",
    "Settled",
    "TagFact",
    "check_job",
    "head_blob",
]


@dataclass(frozen=True)
class _DigestFact:
    repository: str
    digest: Digest

    @property
    def label(self) -> str:
        return f"{self.repository}@{self.digest}"


class BlobFact(_DigestFact):
    """The blob ``digest`` is in ``repository``."""


class ManifestFact(_DigestFact):
    """The manifest ``digest`` is in ``repository`` (a blob and a manifest of one digest are two facts)."""


@dataclass(frozen=True)
class TagFact:
    """``tag`` of ``repository`` points at the image being pushed."""

    repository: str
    tag: str

    @property
    def label(self) -> str:
        return f"{self.repository}:{self.tag}"


Fact: TypeAlias = BlobFact | ManifestFact | TagFact


class Outcome(enum.Enum):
    """How a fact came to be true."""

    PRESENT = "present"
    """The target had it already: a HEAD said so, or a manifest above it was there."""
    UPLOADED = "uploaded"
    MOUNTED = "mounted"
    PUSHED = "pushed"
    """A manifest or tag stored by a ``PUT``."""

    @classmethod
    def of(cls, placement: Placement) -> Outcome:
        return cls.MOUNTED if placement is Placement.MOUNTED else cls.UPLOADED


Settled: TypeAlias = Outcome | ImgbundleError
PushJob = Job[Fact, Settled]
PushRunner = JobRunner[Fact, Settled]


def head_blob(client: WriteStore, fact: BlobFact) -> Outcome | None:
    """``PRESENT`` when the target holds the blob, else ``None`` (the fact stays open)."""
    return Outcome.PRESENT if client.blob_exists(fact.repository, fact.digest) else None


def check_job(fact: Fact, head: Callable[[], Settled | None], progress: Progress, *,
              required: bool = False) -> PushJob:
    """A HEAD whose answer settles ``fact`` (``None``: absent, left open); one progress item each.

    The item is not ok when the HEAD was refused, or when a ``required`` fact (a blob the bundle leaves
    to the target) is absent. A refusal (an ``ImgbundleError``) settles the fact as failed; an
    unreachable target stops the run.
    """

    def work() -> Mapping[Fact, Settled]:
        try:
            answer = head()
        except UnreachableError:
            raise
        except ImgbundleError as error:
            answer = error
        progress.item_done(fact.label, answer is Outcome.PRESENT or (answer is None and not required))
        return {fact: answer} if answer is not None else {}

    return Job(f"check {fact.label}", work, produces=(fact,))
