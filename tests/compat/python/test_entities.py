"""Entities: every operation with ETags, every EDM type round trip, awkward keys, limits."""

import math
import uuid
from datetime import datetime, timezone

import pytest

from conftest import error_code
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import EdmType, EntityProperty, UpdateMode


def test_create_get_update_merge_delete_with_etags(table):
    meta = table.create_entity({"PartitionKey": "p", "RowKey": "r", "a": 1, "b": "x"})
    etag1 = meta["etag"]
    assert etag1.startswith('W/"datetime\'')
    got = table.get_entity("p", "r")
    assert got.metadata["etag"] == etag1
    assert got.metadata["timestamp"] is not None
    assert got["a"] == 1 and got["b"] == "x"

    meta = table.update_entity({"PartitionKey": "p", "RowKey": "r", "a": 2}, mode=UpdateMode.REPLACE,
                               etag=etag1, match_condition=MatchConditions.IfNotModified)
    etag2 = meta["etag"]
    assert etag2 != etag1
    replaced = table.get_entity("p", "r")
    assert replaced["a"] == 2 and "b" not in replaced

    with pytest.raises(ResourceModifiedError) as info:
        table.update_entity({"PartitionKey": "p", "RowKey": "r", "a": 3}, mode=UpdateMode.MERGE,
                            etag=etag1, match_condition=MatchConditions.IfNotModified)
    assert error_code(info.value) == "UpdateConditionNotSatisfied"

    table.update_entity({"PartitionKey": "p", "RowKey": "r", "c": 4}, mode=UpdateMode.MERGE)
    merged = table.get_entity("p", "r")
    assert merged["a"] == 2 and merged["c"] == 4

    with pytest.raises(ResourceModifiedError):
        table.delete_entity("p", "r", etag=etag1, match_condition=MatchConditions.IfNotModified)
    table.delete_entity("p", "r", etag=merged.metadata["etag"], match_condition=MatchConditions.IfNotModified)
    with pytest.raises(ResourceNotFoundError) as info:
        table.get_entity("p", "r")
    assert error_code(info.value) == "ResourceNotFound"


def test_upserts_create_and_modify(table):
    table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "a": 1, "b": 1}, mode=UpdateMode.REPLACE)
    table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "c": 1}, mode=UpdateMode.MERGE)
    assert dict(table.get_entity("p", "r")) == {"PartitionKey": "p", "RowKey": "r", "a": 1, "b": 1, "c": 1}
    table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "d": 1}, mode=UpdateMode.REPLACE)
    assert dict(table.get_entity("p", "r")) == {"PartitionKey": "p", "RowKey": "r", "d": 1}
    table.upsert_entity({"PartitionKey": "p", "RowKey": "new", "e": 1}, mode=UpdateMode.MERGE)
    assert table.get_entity("p", "new")["e"] == 1


def test_update_missing_entity_is_not_found(table):
    with pytest.raises(ResourceNotFoundError):
        table.update_entity({"PartitionKey": "p", "RowKey": "missing", "a": 1})


def test_insert_duplicate_conflicts(table):
    table.create_entity({"PartitionKey": "p", "RowKey": "r"})
    with pytest.raises(ResourceExistsError) as info:
        table.create_entity({"PartitionKey": "p", "RowKey": "r"})
    assert error_code(info.value) == "EntityAlreadyExists"


def test_every_edm_type_round_trips(table):
    when = datetime(2021, 3, 4, 5, 6, 7, 123456, tzinfo=timezone.utc)
    guid = uuid.uuid4()
    entity = {
        "PartitionKey": "types",
        "RowKey": "1",
        "string": "héllo 'quoted' \"double\"",
        "empty": "",
        "int32": -2147483648,
        "int32max": 2147483647,
        "int64": EntityProperty(9223372036854775807, EdmType.INT64),
        "int64neg": EntityProperty(-9223372036854775808, EdmType.INT64),
        "double": 3.25,
        "wholedouble": 3.0,
        "nan": float("nan"),
        "inf": float("inf"),
        "neginf": float("-inf"),
        "bool": True,
        "false": False,
        "datetime": when,
        "guid": guid,
        "binary": b"\x00\x01binary\xff",
        "bigstring": "x" * 32 * 1024,
    }
    table.create_entity(entity)
    got = table.get_entity("types", "1")
    assert got["string"] == entity["string"]
    assert got["empty"] == ""
    assert got["int32"] == -2147483648 and got["int32max"] == 2147483647
    assert got["int64"].value == 9223372036854775807 and got["int64"].edm_type == EdmType.INT64
    assert got["int64neg"].value == -9223372036854775808
    assert got["double"] == 3.25
    assert got["wholedouble"] == 3.0 and isinstance(got["wholedouble"], float)
    assert math.isnan(got["nan"])
    assert got["inf"] == float("inf") and got["neginf"] == float("-inf")
    assert got["bool"] is True and got["false"] is False
    assert got["datetime"] == when
    assert got["guid"] == guid
    assert got["binary"] == b"\x00\x01binary\xff"
    assert got["bigstring"] == "x" * 32 * 1024


def test_explicitly_typed_properties(table):
    table.create_entity({
        "PartitionKey": "p",
        "RowKey": "typed",
        "small64": EntityProperty(5, EdmType.INT64),
        "dbl": EntityProperty(2.0, EdmType.DOUBLE),
        "str": EntityProperty("123", EdmType.STRING),
    })
    got = table.get_entity("p", "typed")
    assert got["small64"].value == 5 and got["small64"].edm_type == EdmType.INT64
    assert got["dbl"] == 2.0
    assert got["str"] == "123"


@pytest.mark.parametrize("pk,rk", [
    ("it's", "o'clock"),
    ("ünï cødé", "日本語"),
    ("with space", "a,b)(c"),
    ("", ""),
    ("%20percent", "plus+sign"),
])
def test_awkward_keys(table, pk, rk):
    table.create_entity({"PartitionKey": pk, "RowKey": rk, "v": 1})
    got = table.get_entity(pk, rk)
    assert got["PartitionKey"] == pk and got["RowKey"] == rk
    table.update_entity({"PartitionKey": pk, "RowKey": rk, "v": 2})
    assert table.get_entity(pk, rk)["v"] == 2
    table.delete_entity(pk, rk)


def test_limits_use_azure_error_codes(table):
    props = {f"p{i}": i for i in range(253)}
    with pytest.raises(HttpResponseError) as info:
        table.create_entity({"PartitionKey": "p", "RowKey": "many", **props})
    assert error_code(info.value) == "TooManyProperties"
    with pytest.raises(HttpResponseError) as info:
        table.create_entity({"PartitionKey": "p", "RowKey": "big", "s": "x" * (32 * 1024 + 1)})
    assert error_code(info.value) == "PropertyValueTooLarge"
    with pytest.raises(HttpResponseError) as info:
        table.create_entity({"PartitionKey": "p", "RowKey": "huge", **{f"b{i}": b"\x00" * 60000 for i in range(20)}})
    assert error_code(info.value) == "EntityTooLarge"


def test_entity_in_missing_table(service):
    client = service.get_table_client("nosuchtable0000")
    with pytest.raises(ResourceNotFoundError) as info:
        client.create_entity({"PartitionKey": "p", "RowKey": "r"})
    assert error_code(info.value) == "TableNotFound"
