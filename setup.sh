#!/usr/bin/env bash
# Create (or reuse) ./.venv and install busnet with the locked versions of its dependencies (constraints.txt,
# the image's lock: platform/README.md).
#   ./setup.sh          what busnet and its demo need
#   ./setup.sh --test   also the test tools and Debian's chromium, for the viewer's browser test
set -euo pipefail
cd "$(dirname "$0")"
case "${1:-}" in
    "") extra="" ;;
    --test) extra="[test]" ;;
    *) echo "usage: ./setup.sh [--test]" >&2; exit 2 ;;
esac
python=${PYTHON:-python3}
# The Python the lock needs: pyproject.toml's requires-python (the lock was made on it).
need=$(sed -n 's/^requires-python = ">=\([0-9.]*\)".*/\1/p' pyproject.toml)
if ! "$python" -c "import sys; sys.exit(sys.version_info < tuple(map(int, '$need'.split('.'))))" 2>/dev/null; then
    have=$("$python" --version 2>&1 || echo "not found")
    echo "setup.sh: busnet's locked dependencies need Python $need or newer; $python is: $have." \
        "Run with PYTHON=/path/to/python$need" >&2
    exit 1
fi
# The viewer's browser test drives Debian's chromium (never a browser downloaded at run time).
if [ -n "$extra" ] && ! command -v chromium >/dev/null; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, by itself and pinned: nothing later may replace it.
.venv/bin/python -m pip install --quiet -c constraints.txt torch torchvision
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".$extra"
echo "busnet is installed in $(pwd)/.venv"
