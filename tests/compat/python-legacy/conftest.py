"""The legacy Python SDK (`azure-cosmosdb-table` 1.0.6) against Trestle: a CRUD/batch/query smoke test
and the behaviours real clients tripped over (issue 11). The legacy SDK differs from azure-data-tables
on the wire: x-ms-version 2017-04-17, and `$batch` parts written as `POST /table HTTP/1.1` (no host, no
account segment, `\\n` line endings) when the endpoint is path-style.

Set TRESTLE_CONN_STR like the azure-data-tables suite; the default is `trestle dev` on 127.0.0.1:10002.
Run: scripts/python-venv.sh && .venv-legacy/bin/pytest tests/compat/python-legacy
"""

import os
import uuid

import pytest
from azure.cosmosdb.table.tableservice import TableService

DEV_CONN_STR = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)
CONN_STR = os.environ.get("TRESTLE_CONN_STR", DEV_CONN_STR)


@pytest.fixture(scope="session")
def service():
    return TableService(connection_string=CONN_STR)


@pytest.fixture
def table(service):
    name = "legacy" + uuid.uuid4().hex[:12]
    service.create_table(name, fail_on_exist=True)
    yield name
    service.delete_table(name)
