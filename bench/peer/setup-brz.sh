#!/usr/bin/env bash
# Creates target/brz-venv with Breezy from PyPI (for the P8 benchmark).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/target/brz-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import breezy' 2>/dev/null || \
  "$venv/bin/pip" install --quiet --disable-pip-version-check breezy
echo "$venv"
