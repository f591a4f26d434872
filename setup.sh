#!/usr/bin/env bash
# Create (or reuse) ./.venv and install busnet with the locked versions of its dependencies (constraints.txt,
# the image's lock: platform/README.md).
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3}
# The viewer's browser test drives Debian's chromium (never a browser downloaded at run time).
if ! command -v chromium >/dev/null; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, by itself and pinned: nothing later may replace it.
.venv/bin/python -m pip install --quiet -c constraints.txt torch torchvision
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test]"
echo "busnet is installed in $(pwd)/.venv"
