"""Entity group transactions: success, failing index with nothing applied, partition and size rules."""

import pytest

from conftest import error_code
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableTransactionError, UpdateMode
from azure.data.tables._table_batch import TableBatchOperations


def test_transaction_of_every_kind_succeeds(table):
    table.create_entity({"PartitionKey": "p", "RowKey": "upd", "a": 1})
    table.create_entity({"PartitionKey": "p", "RowKey": "del", "a": 1})
    table.create_entity({"PartitionKey": "p", "RowKey": "mrg", "a": 1})
    result = table.submit_transaction([
        ("create", {"PartitionKey": "p", "RowKey": "new", "a": 1}),
        ("update", {"PartitionKey": "p", "RowKey": "upd", "b": 2}, {"mode": UpdateMode.REPLACE}),
        ("update", {"PartitionKey": "p", "RowKey": "mrg", "b": 2}, {"mode": UpdateMode.MERGE}),
        ("upsert", {"PartitionKey": "p", "RowKey": "ups", "c": 3}),
        ("delete", {"PartitionKey": "p", "RowKey": "del"}),
    ])
    assert len(result) == 5
    assert all("etag" in r for r in result[:4])
    assert dict(table.get_entity("p", "upd")) == {"PartitionKey": "p", "RowKey": "upd", "b": 2}
    assert table.get_entity("p", "mrg")["a"] == 1
    assert table.get_entity("p", "ups")["c"] == 3
    with pytest.raises(ResourceNotFoundError):
        table.get_entity("p", "del")


def test_failing_operation_reports_its_index_and_rolls_back(table):
    table.create_entity({"PartitionKey": "p", "RowKey": "exists"})
    with pytest.raises(TableTransactionError) as info:
        table.submit_transaction([
            ("create", {"PartitionKey": "p", "RowKey": "a"}),
            ("create", {"PartitionKey": "p", "RowKey": "b"}),
            ("create", {"PartitionKey": "p", "RowKey": "exists"}),
        ])
    assert info.value.index == 2
    assert error_code(info.value) == "EntityAlreadyExists"
    with pytest.raises(ResourceNotFoundError):
        table.get_entity("p", "a")


def test_update_of_missing_entity_in_batch(table):
    with pytest.raises(TableTransactionError) as info:
        table.submit_transaction([
            ("upsert", {"PartitionKey": "p", "RowKey": "a"}),
            ("update", {"PartitionKey": "p", "RowKey": "missing", "x": 1}),
        ])
    assert info.value.index == 1
    assert error_code(info.value) == "ResourceNotFound"


def _raw_batch(table, entities):
    """Builds a batch with the SDK's own request builder, bypassing its client-side partition check."""
    batch = TableBatchOperations(
        config=table._client._config,
        endpoint=f"{table.scheme}://{table._primary_hostname}",
        table_name=table.table_name,
        is_cosmos_endpoint=False,
    )
    for entity in entities:
        batch._partition_key = None
        batch.create(entity)
    return table._batch_send(table.table_name, *batch.requests)


def test_different_partitions_are_refused_by_the_server(table):
    with pytest.raises(ValueError):
        table.submit_transaction([("create", {"PartitionKey": "a", "RowKey": "1"}),
                                  ("create", {"PartitionKey": "b", "RowKey": "1"})])
    with pytest.raises(TableTransactionError) as info:
        _raw_batch(table, [{"PartitionKey": "a", "RowKey": "1"}, {"PartitionKey": "b", "RowKey": "1"}])
    assert error_code(info.value) == "CommandsInBatchActOnDifferentPartitions"
    assert info.value.index == 1


def test_same_entity_twice_is_refused(table):
    with pytest.raises(TableTransactionError) as info:
        table.submit_transaction([("upsert", {"PartitionKey": "p", "RowKey": "x"}),
                                  ("upsert", {"PartitionKey": "p", "RowKey": "x", "v": 2})])
    assert error_code(info.value) == "InvalidDuplicateRow"
    assert info.value.index == 1


def test_more_than_a_hundred_operations_is_refused(table):
    with pytest.raises(TableTransactionError) as info:
        table.submit_transaction([("create", {"PartitionKey": "p", "RowKey": f"{i:03d}"}) for i in range(101)])
    assert error_code(info.value) == "InvalidInput"
    assert "exceeds the maximum 100 changes" in info.value.message
    assert table.submit_transaction([("create", {"PartitionKey": "p", "RowKey": f"{i:03d}"}) for i in range(100)])
