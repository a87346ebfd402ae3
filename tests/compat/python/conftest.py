"""Azure SDK compatibility suite: the official `azure-data-tables` SDK against Trestle.

Set TRESTLE_CONN_STR to point the suite at a server; the default is the well-known development account
at http://127.0.0.1:10002/devstoreaccount1 (what `trestle dev` serves). Every test creates its own
uniquely named tables and deletes them afterwards, so the suite can run against a shared cluster.

Run: scripts/python-venv.sh && .venv/bin/pytest tests/compat/python
"""

import os
import uuid

import pytest
from azure.core.credentials import AzureNamedKeyCredential
from azure.data.tables import TableServiceClient

DEV_CONN_STR = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)
CONN_STR = os.environ.get("TRESTLE_CONN_STR", DEV_CONN_STR)


def parse_conn_str(conn_str):
    parts = {}
    for item in conn_str.split(";"):
        if "=" in item:
            key, value = item.split("=", 1)
            parts[key.strip()] = value.strip()
    return parts


SETTINGS = parse_conn_str(CONN_STR)
ACCOUNT_NAME = SETTINGS["AccountName"]
ACCOUNT_KEY = SETTINGS["AccountKey"]
ENDPOINT = SETTINGS.get("TableEndpoint") or f"http://127.0.0.1:10002/{ACCOUNT_NAME}"


def unique_name(prefix="t"):
    return prefix + uuid.uuid4().hex[:16]


@pytest.fixture(scope="session")
def credential():
    return AzureNamedKeyCredential(ACCOUNT_NAME, ACCOUNT_KEY)


@pytest.fixture(scope="session")
def endpoint():
    return ENDPOINT.rstrip("/")


@pytest.fixture(scope="session")
def service():
    with TableServiceClient.from_connection_string(CONN_STR) as client:
        yield client


@pytest.fixture
def table_name():
    return unique_name()


@pytest.fixture
def table(service, table_name):
    client = service.create_table(table_name)
    yield client
    service.delete_table(table_name)


def error_code(error):
    """The Azure error code of an SDK exception: the SDK's decoded code when it has one, else the
    `x-ms-error-code` header (some SDK paths re-raise the undecoded error)."""
    code = getattr(error, "error_code", None)
    if code is None and getattr(error, "response", None) is not None:
        code = error.response.headers.get("x-ms-error-code")
    return str(getattr(code, "value", code)) if code is not None else None
