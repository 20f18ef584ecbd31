"""scripts/: the shared registry launcher, the README demo and the benchmark, run for real on a tiny set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import bench
import localregistry
from support.images import seed_into
from support.registry import RunningRegistry

CHECKOUT = Path(__file__).resolve().parents[1]
SCRIPTS = CHECKOUT / "scripts"
TINY = ["--images", "12", "--size", "2M"]
RUNS_THE_CHECKOUT = f"imgbundle: {sys.executable} -m bundler, from {CHECKOUT / 'bundler'}"
"""The scripts' first line when they run this checkout's bundler, not an ``imgbundle`` found on PATH."""


def _run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
    return subprocess.run([sys.executable, str(SCRIPTS / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False, env=env)


@pytest.mark.parametrize(("script", "says"), [("imageset.py", "imageset.py seed"), ("localregistry.py", "usage:")])
def test_script_help_names_what_the_script_does(script: str, says: str, tmp_path: Path) -> None:
    proc = _run(script, "--help", cwd=tmp_path)
    assert proc.returncode == 0 and says in proc.stdout


@pytest.mark.registry
def test_launcher_ignores_registry_variables_and_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """REGISTRY_* would override the config (here: listen elsewhere, fail on storage); the child never sees them."""
    monkeypatch.setenv("REGISTRY_HTTP_ADDR", "127.0.0.1:1")
    monkeypatch.setenv("REGISTRY_STORAGE", "no-such-driver")
    with localregistry.local_registry(tmp_path) as reg:
        assert httpx.get(f"{reg.url}/v2/", trust_env=False).status_code == 200
        assert reg.storage_dir == tmp_path / "storage"
    assert reg.process.poll() is not None


@pytest.mark.registry
def test_launcher_failure_is_an_exception_with_the_log(tmp_path: Path) -> None:
    with pytest.raises(localregistry.RegistryStartError, match="log tail"):
        localregistry.launch(tmp_path, extra_config={"storage": {"filesystem": None, "no-such-driver": {}}})


def test_target_check_catches_a_wrong_digest(registry: RunningRegistry, small_imageset) -> None:  # noqa: ANN001
    seed_into(registry, small_imageset, repo_prefix="scripts-check")
    right = [bench.Expected(f"scripts-check/{e.path}", e.digest) for e in bench.imgbundle_refs(small_imageset)]
    bench.check_target(registry.url, right, "seeded")
    wrong = [*right[1:], bench.Expected(right[0].path, right[1].digest)]
    with pytest.raises(bench.BenchError, match=f"1 of {len(right)} references wrong"):
        bench.check_target(registry.url, wrong, "seeded")


def test_skopeo_refs_drop_tags_skopeo_cannot_combine_with_digests(small_imageset) -> None:  # noqa: ANN001
    pinned = {name for name, how in small_imageset.pinned.items() if how == "tag+digest"}
    assert pinned, "the small set pins one reference by tag and digest"
    assert all(":" not in ref.path.split("@")[0] for ref in bench.skopeo_refs(small_imageset) if "@" in ref.path)
    by_path = {ref.path: ref.digest for ref in bench.imgbundle_refs(small_imageset)}
    assert all(name in by_path for name in pinned)  # imgbundle keeps the tag


@pytest.mark.registry
def test_demo_runs_the_cli_and_checks_every_digest(tmp_path: Path) -> None:
    proc = _run("demo.py", *TINY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.splitlines()[0] == RUNS_THE_CHECKOUT
    for command in ("$ imgbundle pack -f images.list", "$ imgbundle list", "$ imgbundle verify", "$ imgbundle unpack"):
        assert command in proc.stdout
    assert "OK: all 12 references on the target have the source digests" in proc.stdout


@pytest.mark.registry
def test_bench_times_every_flow_and_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "bench-out"
    proc = _run("bench.py", *TINY, "--runs", "1", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert RUNS_THE_CHECKOUT in proc.stdout.splitlines()
    report = json.loads((out / "bench.json").read_text())
    phases = report["median"]
    assert set(phases) == {"skopeo pull", "tar + zstd", "zstd -d + tar x", "skopeo push", "imgbundle pack",
                           "imgbundle verify", "imgbundle unpack", "GET floor", "hash floor", "upload floor",
                           "push floor", "push+HEAD floor"}
    assert all(p["seconds"] > 0 and p["peak_rss_kib"] > 0 for p in phases.values())
    assert phases["imgbundle pack"]["output_bytes"] > 2 * 1024 * 1024 and report["ratios"]["bundle / skopeo tar.zst"] > 0
    table = (out / "bench.md").read_text()
    assert "| imgbundle pack |" in table and "| pack / GET floor |" in table and " of 1 |" in table
    assert "| push floor / upload floor |" in table  # a ratio without a target: no verdict, still its runs
    assert "| unpack / push+HEAD floor |" in table and "| verify / hash floor speed |" in table
    assert not (out / "work" / "run-1").exists()  # scratch space is removed after each run


@pytest.mark.registry
def test_bench_small_shape_times_imgbundle_against_the_request_floors(tmp_path: Path) -> None:
    out = tmp_path / "bench-out"
    proc = _run("bench.py", "--shape", "small", "--images", "20", "--repositories", "3", "--floor-jobs", "2,4",
                "--runs", "1", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "bench.json").read_text())
    assert report["meta"]["shape"] == "small" and report["meta"]["images"] == 20
    phases = report["median"]
    assert set(phases) == {"imgbundle pack", "imgbundle verify", "imgbundle unpack", "pull floor j2", "pull floor j4",
                           "push+HEAD floor j2", "push+HEAD floor j4", "pull request floor", "push request floor"}
    pulls = [phases["pull floor j2"]["seconds"], phases["pull floor j4"]["seconds"]]
    assert phases["pull request floor"]["seconds"] == min(pulls)
    assert report["ratios"]["pack / request floor"] > 0 and report["ratios"]["unpack / request floor"] > 0
