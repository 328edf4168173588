#!/usr/bin/env bash
# Set up (idempotently) and start the emulated device: /dev/kvcpu0.
# Arguments go to kvcpu-dev (default: --mock, in the background).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
args=("$@")
((${#args[@]})) || args=(--mock)
if [[ $(id -u) != 0 ]]; then
  exec sudo .venv/bin/kvcpu-dev "${args[@]}"
fi
exec .venv/bin/kvcpu-dev "${args[@]}"
