"""Queries: $filter (type-correct), $select (absent → None), $top, paging across more than 1000 entities."""

import uuid
from datetime import datetime, timezone

import pytest

from conftest import error_code
from azure.core.exceptions import HttpResponseError
from azure.data.tables import EdmType, EntityProperty


def rows(entities):
    return [e["RowKey"] for e in entities]


def test_filter_on_int64_compares_numbers_not_strings(table):
    for rk, n in [("a", 2), ("b", 10), ("c", 100), ("d", 2**40)]:
        table.create_entity({"PartitionKey": "p", "RowKey": rk, "n": EntityProperty(n, EdmType.INT64)})
    assert rows(table.query_entities("n gt 5L")) == ["b", "c", "d"]
    assert rows(table.query_entities("n lt 100L")) == ["a", "b"]
    assert rows(table.query_entities("n ge @big", parameters={"big": 2**40})) == ["d"]


def test_filters_on_every_literal_type(table):
    when = datetime(2020, 1, 1, tzinfo=timezone.utc)
    guid = uuid.UUID("c9da6455-213d-42c9-9a79-3e9149a57833")
    table.create_entity({"PartitionKey": "p", "RowKey": "1", "i": 1, "s": "apple", "b": True, "d": 1.5,
                         "t": when, "g": guid, "bin": b"\x0a\x0b"})
    table.create_entity({"PartitionKey": "p", "RowKey": "2", "i": 2, "s": "banana", "b": False, "d": 2.5,
                         "t": datetime(2021, 1, 1, tzinfo=timezone.utc), "g": uuid.uuid4(), "bin": b"\x01"})
    assert rows(table.query_entities("i eq 2")) == ["2"]
    assert rows(table.query_entities("s ge 'b' and s lt 'c'")) == ["2"]
    assert rows(table.query_entities("b eq true")) == ["1"]
    assert rows(table.query_entities("d gt 2.0")) == ["2"]
    assert rows(table.query_entities("t lt @t", parameters={"t": datetime(2020, 6, 1, tzinfo=timezone.utc)})) == ["1"]
    assert rows(table.query_entities("g eq @g", parameters={"g": guid})) == ["1"]
    assert rows(table.query_entities("bin eq X'0A0B'")) == ["1"]
    assert rows(table.query_entities("not (i eq 1)")) == ["2"]
    assert rows(table.query_entities("PartitionKey eq 'p' and (RowKey eq '1' or RowKey eq '2')")) == ["1", "2"]
    # A property an entity lacks never matches.
    assert rows(table.query_entities("missing ne 'x'")) == []


def test_select_returns_absent_properties_as_none(table):
    table.create_entity({"PartitionKey": "p", "RowKey": "1", "a": 1, "b": "x"})
    table.create_entity({"PartitionKey": "p", "RowKey": "2", "b": "y"})
    result = list(table.query_entities("PartitionKey eq 'p'", select=["a", "RowKey"]))
    assert result[0]["a"] == 1 and "b" not in result[0]
    assert result[1].get("a") is None
    assert [e["RowKey"] for e in result] == ["1", "2"]


def test_top_and_continuation(table):
    for i in range(7):
        table.create_entity({"PartitionKey": f"p{i % 2}", "RowKey": f"{i:02d}"})
    pages = [list(page) for page in table.list_entities(results_per_page=3).by_page()]
    assert [len(p) for p in pages] == [3, 3, 1]
    keys = [(e["PartitionKey"], e["RowKey"]) for p in pages for e in p]
    assert keys == sorted(keys)
    assert len(keys) == 7


def test_paging_across_more_than_a_thousand_entities(table):
    total = 1150
    for start in range(0, total, 100):
        ops = [("create", {"PartitionKey": "bulk", "RowKey": f"{i:05d}", "i": i}) for i in range(start, min(start + 100, total))]
        table.submit_transaction(ops)
    pager = table.list_entities().by_page()
    first = list(next(pager))
    assert len(first) == 1000
    rest = [e for page in pager for e in page]
    assert len(rest) == total - 1000
    assert [e["i"] for e in first + rest] == list(range(total))
    assert sum(1 for _ in table.query_entities("i ge 1000")) == total - 1000


def test_bad_filter_is_invalid_input(table):
    with pytest.raises(HttpResponseError) as info:
        list(table.query_entities("a eq"))
    assert info.value.status_code == 400
    assert error_code(info.value) == "InvalidInput"
    clauses = " or ".join(f"a eq {i}" for i in range(16))
    with pytest.raises(HttpResponseError) as info:
        list(table.query_entities(clauses))
    assert info.value.status_code == 400
