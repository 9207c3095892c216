#!/usr/bin/env bash
# Create .venv/ in the repo root with the pinned CPU stack and openvlt installed (editable).
# Idempotent: does nothing when pyproject.toml and requirements/cpu.lock are unchanged since the last
# successful run. Used by the README's two commands and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.openvlt-setup
want=$(cat pyproject.toml requirements/cpu.lock | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/openvlt" ]; then
    exit 0
fi

echo "openvlt setup: creating $VENV (pinned CPU stack, ~2 minutes the first time)" >&2
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), "openvlt needs Python >= 3.10"'
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
# pip 23 back-tracks for minutes on this dependency set; 26.x resolves it in seconds.
"${PIP[@]}" install -q --upgrade "pip==26.3"
# torch first, from the lock: anything that asks for plain "torch" would otherwise pull CUDA wheels.
"${PIP[@]}" install -q -c requirements/cpu.lock torch==2.13.0
"${PIP[@]}" install -q -c requirements/cpu.lock -e ".[dev]"
echo "$want" > "$STAMP"
echo "openvlt setup: done ($VENV/bin/openvlt)" >&2
