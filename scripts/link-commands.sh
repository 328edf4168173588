#!/usr/bin/env bash
# Link every command the package defines ([project.scripts] in
# pyproject.toml: kvcpu-dev, kvctl, kvcpu-eval) from the venv into DIR
# (default /usr/local/bin), so that `sudo kvcpu-dev`, `kvctl` and
# `kvcpu-eval` work from anywhere, as the README writes them.
#
#   scripts/link-commands.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/usr/local/bin}
commands=$(.venv/bin/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["scripts"])')
for cmd in $commands; do
    ln -sfn "$PWD/.venv/bin/$cmd" "$dir/$cmd"
done
