#!/usr/bin/env bash
# The floor check: the whole test suite in a fresh virtual environment with every runtime dependency at the oldest
# version we declare. The floors are read from requirements.txt (each line "name>=version") and installed pinned
# ("name==version"); setup.py's install_requires must list the same floors, or the check fails before installing.
# .ci/run runs this after the README's two commands; run it before each release, and after changing a floor.
#   bash scripts/test_floors.sh              # venv in .venv-floors/ (FLOOR_VENV=... to put it elsewhere)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FLOOR_VENV:-.venv-floors}

pins=$(python3 - <<'EOF'
import ast
import re
import sys
from pathlib import Path

listed = [line.split("#")[0].strip() for line in Path("requirements.txt").read_text().splitlines()]
listed = [line for line in listed if line]
call = next(node for node in ast.walk(ast.parse(Path("setup.py").read_text()))
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup")
declared = ast.literal_eval(next(kw.value for kw in call.keywords if kw.arg == "install_requires"))
if sorted(declared) != sorted(listed):
    sys.exit(f"setup.py install_requires {declared} != requirements.txt {listed}")
pins = []
for requirement in listed:
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9][0-9A-Za-z.]*)", requirement)
    if match is None:
        sys.exit(f"requirements.txt: {requirement!r} is not of the form name>=version, so it has no floor to test")
    pins.append(f"{match[1]}=={match[2]}")
print(" ".join(pins))
EOF
)

rm -rf "$VENV"
python3 -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
echo "+ pip install $pins -e .[test]"
# shellcheck disable=SC2086
pip install $pins -e ".[test]"
FLOOR_PINS="$pins" python - <<'EOF'
import os
import sys
from importlib.metadata import version

names = [pin.split("==")[0] for pin in os.environ["FLOOR_PINS"].split()]
print("floor check on Python", sys.version.split()[0] + ":", ", ".join(f"{n} {version(n)}" for n in names))
EOF
echo "+ python -m pytest -q"
python -m pytest -q
