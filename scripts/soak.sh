#!/usr/bin/env bash
# The full fault soak (issue #20): N seeded pack and N seeded unpack runs (default 20) through a proxy that
# fails one request in five (8 % HTTP 500, 4 % 429, 4 % reset, 4 % body cut short); each must match a clean
# run byte for byte (pack) or digest for digest (unpack). Prints one line of figures per command.
# The suite runs the same tests (tests/test_faults_soak.py) with IMGBUNDLE_SOAK_RUNS=1.
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
runs="${1:-20}"
report="$(mktemp -t imgbundle-soak.XXXXXX)"
trap 'rm -f "$report"' EXIT

status=0
IMGBUNDLE_SOAK_RUNS="$runs" IMGBUNDLE_SOAK_REPORT="$report" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" \
    python3 -m pytest -q -p no:cacheprovider tests/test_faults_soak.py || status=$?

python3 - "$report" "$runs" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for kind in ("pack", "unpack"):
    mine = [row for row in rows if row["run"] == kind]
    if not mine:
        continue
    seconds = [row["seconds"] for row in mine]
    requests = sum(row["requests"] for row in mine)
    faults = sum(sum(row["faults"].values()) for row in mine)
    print(f"{kind}: {len(mine)} of {sys.argv[2]} runs ended (see pytest for pass/fail); {requests} requests, "
          f"{faults} faults ({100 * faults / max(1, requests):.1f} %); seconds median {statistics.median(seconds):.1f},"
          f" max {max(seconds):.1f}")
PY
exit "$status"
