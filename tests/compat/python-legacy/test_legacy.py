"""azure-cosmosdb-table against Trestle: smoke test plus the issue-11 behaviours."""

import pytest
from azure.common import AzureHttpError, AzureMissingResourceHttpError
from azure.cosmosdb.table.models import EdmType, EntityProperty
from azure.cosmosdb.table.tablebatch import TableBatch


def test_crud_query_and_batch_smoke(service, table):
    service.insert_entity(table, {"PartitionKey": "p", "RowKey": "1", "n": 1, "s": "one"})
    entity = service.get_entity(table, "p", "1")
    assert entity.s == "one" and entity.n == 1
    service.update_entity(table, {"PartitionKey": "p", "RowKey": "1", "s": "uno"}, if_match=entity.etag)
    service.merge_entity(table, {"PartitionKey": "p", "RowKey": "1", "m": True})
    entity = service.get_entity(table, "p", "1")
    assert entity.s == "uno" and entity.m is True and "n" not in entity
    # A batch of the legacy SDK's own shape: relative part paths, \n line endings (issue 11, item 8).
    batch = TableBatch()
    for i in range(2, 5):
        batch.insert_entity({"PartitionKey": "p", "RowKey": str(i), "n": i})
    batch.merge_entity({"PartitionKey": "p", "RowKey": "1", "b": 7})
    service.commit_batch(table, batch)
    rows = list(service.query_entities(table, filter="n ge 2"))
    assert [r.RowKey for r in rows] == ["2", "3", "4"]
    assert service.get_entity(table, "p", "1").b == 7
    service.delete_entity(table, "p", "1")
    with pytest.raises(AzureMissingResourceHttpError):
        service.get_entity(table, "p", "1")


def test_a_foreign_etag_is_412(service, table):
    service.insert_entity(table, {"PartitionKey": "p", "RowKey": "r", "v": 1})
    for etag in ['W/"wrong"', 'w/"wrong"']:
        with pytest.raises(AzureHttpError) as info:
            service.update_entity(table, {"PartitionKey": "p", "RowKey": "r", "v": 2}, if_match=etag)
        assert info.value.status_code == 412
    assert service.get_entity(table, "p", "r").v == 1


def test_filters_must_be_boolean_and_int32_literals_widen(service, table):
    service.insert_entity(table, {"PartitionKey": "p", "RowKey": "d",
                                  "v": EntityProperty(EdmType.DOUBLE, 5.0)})
    service.insert_entity(table, {"PartitionKey": "p", "RowKey": "l",
                                  "v": EntityProperty(EdmType.INT64, 5)})
    assert [e.RowKey for e in service.query_entities(table, filter="v eq 5")] == ["d", "l"]
    assert [e.RowKey for e in service.query_entities(table, filter="v eq 5L")] == ["l"]
    with pytest.raises(AzureHttpError) as info:
        list(service.query_entities(table, filter="(1)"))
    assert info.value.status_code == 400


def test_whole_number_double_stays_double(service, table):
    service.insert_entity(table, {"PartitionKey": "p", "RowKey": "r",
                                  "d": EntityProperty(EdmType.DOUBLE, 5.0)})
    value = service.get_entity(table, "p", "r").d
    assert isinstance(value, float) and value == 5.0
