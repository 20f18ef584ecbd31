"""Target naming for unpack: pure functions, no registry."""

from __future__ import annotations

import string
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bundler.bundle.index import ImageEntry
from bundler.errors import InputError
from bundler.mapping import host_component, parse_to, plan_targets, unused_maps
from bundler.reference import parse_reference

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def entry(reference: str, digest: str = D1) -> ImageEntry:
    normalised = str(parse_reference(reference))
    return ImageEntry(source=reference, reference=normalised, digest=digest,
                      media_type="application/vnd.oci.image.index.v1+json", platforms=[], size=1)


def names(targets) -> list[str]:
    return [t.display for t in targets]


def test_source_host_is_dropped_and_library_kept() -> None:
    images = [entry("quay.io/calico/node:v3.26.4"), entry("nginx:1.25"), entry("registry.k8s.io/pause:3.9")]
    assert names(plan_targets(images, "harbor.local:8443")) == [
        "harbor.local:8443/calico/node:v3.26.4",
        "harbor.local:8443/library/nginx:1.25",
        "harbor.local:8443/pause:3.9",
    ]
    assert names(plan_targets(images, "harbor.local/mirror/k8s/"))[0] == "harbor.local/mirror/k8s/calico/node:v3.26.4"


def test_target_carries_digest_and_source() -> None:
    [target] = plan_targets([entry("quay.io/calico/node:v3.26.4", D2)], "Harbor.Local/m")
    assert target.source_ref == "quay.io/calico/node:v3.26.4"
    assert target.target_ref.registry == "harbor.local"
    assert (target.repository, target.tag, target.digest) == ("m/calico/node", "v3.26.4", D2)
    assert target.pinned == f"harbor.local/m/calico/node@{D2}"


def test_keep_host_makes_host_a_valid_component() -> None:
    images = [entry("quay.io/calico/node:v3.26.4"), entry("127.0.0.1:5000/a/b:1"), entry("nginx:1")]
    assert names(plan_targets(images, "h.local/p", keep_host=True)) == [
        "h.local/p/quay.io/calico/node:v3.26.4",
        "h.local/p/127.0.0.1-5000/a/b:1",
        "h.local/p/docker.io/library/nginx:1",
    ]
    assert host_component("[::1]:5000") == "1-5000"


def test_flatten_turns_remaining_slashes_into_dashes() -> None:
    images = [entry("quay.io/calico/node:v3.26.4")]
    assert names(plan_targets(images, "h.local/p/q", flatten=True)) == ["h.local/p/q/calico-node:v3.26.4"]
    assert names(plan_targets(images, "h.local", keep_host=True, flatten=True)) == ["h.local/quay.io-calico-node:v3.26.4"]


def test_maps_longest_prefix_wins_on_whole_components() -> None:
    images = [entry("quay.io/calico/node:v1"), entry("quay.io/jetstack/cert-manager:v2"),
              entry("quay.io/calicoctl/x:v3"), entry("nginx:1"), entry("index.docker.io/library/redis:7")]
    maps = [("quay.io", "q"), ("quay.io/calico/", "/net/calico"), ("quay.io/cal", "never"),
            ("INDEX.docker.io/library", "")]
    assert names(plan_targets(images, "h.local/p", maps=maps)) == [
        "h.local/p/net/calico/node:v1",
        "h.local/p/q/jetstack/cert-manager:v2",
        "h.local/p/q/calicoctl/x:v3",
        "h.local/p/nginx:1",
        "h.local/p/redis:7",
    ]


def test_map_wins_over_keep_host_and_flatten_applies_after() -> None:
    images = [entry("quay.io/calico/node:v1"), entry("ghcr.io/a/b:2")]
    got = plan_targets(images, "h.local", keep_host=True, flatten=True, maps=[("quay.io/calico", "net")])
    assert names(got) == ["h.local/net-node:v1", "h.local/ghcr.io-a-b:2"]


def test_unused_maps_are_reported() -> None:
    images = [entry("quay.io/calico/node:v1")]
    assert unused_maps(images, [("quay.io", "q"), ("quay.io/cal", "x"), ("calico", "y")]) == [
        ("quay.io/cal", "x"), ("calico", "y")]


def test_two_sources_on_one_target_tag_is_refused_naming_both() -> None:
    images = [entry("quay.io/calico/node:v1"), entry("docker.io/calico/node:v1", D2), entry("ghcr.io/x/y:1")]
    with pytest.raises(InputError) as caught:
        plan_targets(images, "h.local")
    message = str(caught.value)
    assert "quay.io/calico/node:v1" in message and "docker.io/calico/node:v1" in message
    assert "h.local/calico/node:v1" in message
    # keep_host tells them apart; other tags of the same target repository are fine
    assert len(plan_targets(images, "h.local", keep_host=True)) == 3
    assert len(plan_targets([entry("quay.io/calico/node:v1"), entry("docker.io/calico/node:v2")], "h.local")) == 2


def test_flatten_collisions_are_refused_even_with_keep_host() -> None:
    images = [entry("quay.io/a/b-c:1"), entry("quay.io/a-b/c:1", D2)]
    with pytest.raises(InputError, match="quay.io/a/b-c:1 and quay.io/a-b/c:1"):
        plan_targets(images, "h.local", keep_host=True, flatten=True)


def test_same_image_twice_is_not_a_collision() -> None:
    images = [entry("quay.io/calico/node:v1"), entry(f"quay.io/calico/node:v1@{D1}")]
    assert len(plan_targets(images, "h.local")) == 2


def test_digest_only_sources_are_pushed_by_digest_only() -> None:
    images = [entry(f"registry.k8s.io/pause@{D1}"), entry(f"coredns/coredns:v1.10.1@{D2}", D2)]
    digest_only, both = plan_targets(images, "h.local")
    assert digest_only.tag is None and digest_only.display == f"h.local/pause@{D1}"
    assert both.tag == "v1.10.1" and both.digest == D2 and both.display == "h.local/coredns/coredns:v1.10.1"
    # two digest-only images of different sources in one repository do not collide
    assert len(plan_targets([entry(f"a.io/x@{D1}"), entry(f"b.io/x@{D2}", D2)], "h.local")) == 2


@pytest.mark.parametrize("to", ["", "https://h.local/p", "harbor/prefix", "h.local/UPPER", "h.local/a//b",
                                "h.local/a:b", "h_l:5000/x", "h.local/-a"])
def test_bad_to_is_an_input_error(to: str) -> None:
    with pytest.raises(InputError):
        plan_targets([entry("quay.io/a/b:1")], to)


@pytest.mark.parametrize("maps", [[("", "x")], [("quay.io/a", "Bad")], [("quay.io/a", "x:y")]])
def test_bad_maps_are_input_errors(maps: list[tuple[str, str]]) -> None:
    with pytest.raises(InputError):
        plan_targets([entry("quay.io/a/b:1")], "h.local", maps=maps)


def test_map_to_nothing_is_refused() -> None:
    with pytest.raises(InputError, match="empty repository"):
        plan_targets([entry("quay.io/a/b:1")], "h.local", maps=[("quay.io/a/b", "")])


def test_parse_to() -> None:
    assert parse_to("LocalHost:5000/a/b") == parse_to("localhost:5000/a/b/")
    assert parse_to("localhost:5000/a/b").prefix == "a/b"
    assert parse_to("h.local").prefix == ""


_component = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=8)
_paths = st.lists(_component, min_size=1, max_size=4).map("/".join)
_hosts = st.sampled_from(["quay.io", "ghcr.io", "registry.k8s.io", "127.0.0.1:5000", "docker.io", "localhost:1"])


@settings(max_examples=200, deadline=None)
@given(host=_hosts, path=_paths, tag=st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=10)
       .filter(lambda t: t[0] not in ".-"), keep_host=st.booleans(), flatten=st.booleans(),
       prefix=st.sampled_from(["", "mirror", "a/b"]))
def test_every_target_is_a_valid_reference(host: str, path: str, tag: str, keep_host: bool, flatten: bool,
                                           prefix: str) -> None:
    to = f"target.local:8443/{prefix}".rstrip("/")
    [target] = plan_targets([entry(f"{host}/{path}:{tag}")], to, keep_host=keep_host, flatten=flatten)
    reparsed = parse_reference(target.display)
    assert (reparsed.registry, reparsed.repository, reparsed.tag) == ("target.local:8443", target.repository, tag)
    below = target.repository[len(prefix):].lstrip("/") if prefix else target.repository
    source = parse_reference(target.source_ref).repository
    if flatten:
        assert "/" not in below and below.endswith(source.replace("/", "-"))
    else:
        assert below.endswith(source) and below.startswith("docker.io/" if keep_host and host == "docker.io" else "")


def test_public_surface() -> None:
    import bundler.unpack as unpack_module

    assert sorted(unpack_module.__all__) == sorted([
        "UnpackOptions", "UnpackResult", "ImageOutcome", "Target", "PushPlan", "plan_targets", "build_plan",
        "unpack", "unpack_bundle", "write_report"])
    assert all(hasattr(unpack_module, name) for name in unpack_module.__all__)


def test_options_refuse_nonsense() -> None:
    from bundler.unpack import UnpackOptions

    with pytest.raises(InputError):
        UnpackOptions(to="h.local", jobs=0)


def test_public_needs_create_projects_on_the_command_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "bundler", "unpack", str(tmp_path / "b.tar.zst"), "--to", "h.local",
                           "--public"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and "--public only applies with --create-projects" in done.stderr
