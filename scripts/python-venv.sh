#!/usr/bin/env bash
# Creates (or refreshes) the Python virtualenv used by the Azure SDK compatibility suite
# (tests/compat/python). Idempotent: an existing .venv is reused, packages are only installed when
# missing. Usage: scripts/python-venv.sh   then   .venv/bin/pytest tests/compat/python
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import azure.data.tables, pytest' 2>/dev/null; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check azure-data-tables pytest
fi
"$venv/bin/python" -c 'import azure.data.tables as t; print("azure-data-tables", t.__version__)'
