#!/usr/bin/env bash
# Creates (or refreshes) the environments of the Azure SDK compatibility suites, one per SDK so their
# dependencies never mix:
#   .venv          azure-data-tables (the current Python SDK) + pytest     -> tests/compat/python
#   .venv-legacy   azure-cosmosdb-table (the legacy Python SDK) + pytest   -> tests/compat/python-legacy
#   tests/compat/js/node_modules   @azure/data-tables from package-lock.json (npm ci) -> tests/compat/js
# Idempotent: existing environments are reused, packages are only installed when missing.
# Usage: scripts/python-venv.sh   then   .venv/bin/pytest tests/compat/python
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# venv DIR IMPORT PACKAGES...: a virtualenv at DIR in which `import IMPORT` works.
venv() {
    local dir="$1" module="$2"
    shift 2
    if [ ! -x "$dir/bin/python" ]; then
        python3 -m venv "$dir"
    fi
    if ! "$dir/bin/python" -c "import $module, pytest" 2>/dev/null; then
        "$dir/bin/pip" install --quiet --disable-pip-version-check "$@" pytest
    fi
}

venv "$root/.venv" azure.data.tables azure-data-tables
"$root/.venv/bin/python" -c 'import azure.data.tables as t; print("azure-data-tables", t.__version__)'

venv "$root/.venv-legacy" azure.cosmosdb.table 'azure-cosmosdb-table==1.0.6'
echo "azure-cosmosdb-table 1.0.6"

js="$root/tests/compat/js"
if command -v npm >/dev/null; then
    if [ ! -d "$js/node_modules/@azure/data-tables" ]; then
        (cd "$js" && npm ci --no-audit --no-fund --loglevel=error)
    fi
    node -e 'console.log("@azure/data-tables", require(process.argv[1] + "/node_modules/@azure/data-tables/package.json").version)' "$js"
else
    echo "python-venv: npm not found; the JavaScript SDK suite (tests/compat/js) cannot run" >&2
    exit 1
fi
