#!/usr/bin/env bash
# The README's demo, from a fresh clone: install what is missing (.ci/install-deps), then run
# scripts/demo.py: two local registries, a generated multi-arch image set, and the real CLI
# (pack, list, verify, unpack), every digest on the target checked with skopeo. Extra arguments
# go to demo.py (--images, --size, --keep, ...).
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

.ci/install-deps

exec python3 scripts/demo.py "$@"
