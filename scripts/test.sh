#!/usr/bin/env bash
# Set up (idempotently) and run the whole test suite.  Live tests mount FUSE
# and need root; run as root or through sudo.  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
if [[ $(id -u) != 0 ]]; then
  exec sudo --preserve-env=PATH .venv/bin/python -m pytest "$@"
fi
exec .venv/bin/python -m pytest "$@"
