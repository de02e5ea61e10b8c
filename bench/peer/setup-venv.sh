#!/usr/bin/env bash
# Creates target/peer-venv with Mercurial 7.2.4 from PyPI (for hg_framing.py).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/target/peer-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -c 'import mercurial' 2>/dev/null || \
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'mercurial==7.2.4'
echo "$venv/bin/python"
