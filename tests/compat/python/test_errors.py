"""Error codes as the SDK surfaces them: request size, $top range, and XML error bodies."""

import pytest
from azure.core.exceptions import HttpResponseError
from azure.data.tables import RequestTooLargeError, TableTransactionError

from conftest import error_code


def test_batch_over_four_mebibytes_is_request_too_large(table):
    blob = b"\x00" * (60 * 1024)
    ops = [("create", {"PartitionKey": "p", "RowKey": f"{i:03d}", **{f"b{j}": blob for j in range(1)}}) for i in range(80)]
    with pytest.raises((RequestTooLargeError, TableTransactionError, HttpResponseError)) as info:
        table.submit_transaction(ops)
    assert info.value.status_code == 413
    assert error_code(info.value) == "RequestBodyTooLarge"


def test_page_size_over_a_thousand_is_invalid_input(table):
    with pytest.raises(HttpResponseError) as info:
        next(table.list_entities(results_per_page=1001).by_page())
    assert info.value.status_code == 400
    assert error_code(info.value) == "InvalidInput"


def test_invalid_property_name(table):
    with pytest.raises(HttpResponseError) as info:
        table.create_entity({"PartitionKey": "p", "RowKey": "r", "bad-name": 1})
    assert error_code(info.value) == "PropertyNameInvalid"


def test_key_with_forbidden_character(table):
    with pytest.raises(HttpResponseError) as info:
        table.create_entity({"PartitionKey": "a/b", "RowKey": "r"})
    assert info.value.status_code == 400
    assert error_code(info.value) == "InvalidInput"
