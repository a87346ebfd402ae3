"""Tables: create, list (with filters and paging), delete, ACLs."""

from datetime import datetime, timedelta, timezone

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.data.tables import TableAccessPolicy, TableClient

from conftest import unique_name, error_code


def test_create_list_and_delete(service, table_name):
    client = service.create_table(table_name)
    assert isinstance(client, TableClient)
    assert client.table_name == table_name
    names = [t.name for t in service.list_tables()]
    assert table_name in names
    service.delete_table(table_name)
    assert table_name not in [t.name for t in service.list_tables()]


def test_create_existing_table_conflicts(service, table):
    with pytest.raises(ResourceExistsError) as info:
        service.create_table(table.table_name.upper())
    assert error_code(info.value) == "TableAlreadyExists"
    assert service.create_table_if_not_exists(table.table_name).table_name == table.table_name


def test_invalid_table_name(service):
    with pytest.raises((HttpResponseError, ValueError)) as info:
        service.create_table("1-bad")
    if isinstance(info.value, HttpResponseError):
        assert error_code(info.value) == "InvalidResourceName"


def test_query_tables_with_filter_and_paging(service):
    prefix = unique_name("pg")
    names = sorted(f"{prefix}{i}" for i in range(5))
    for name in names:
        service.create_table(name)
    try:
        found = [t.name for t in service.query_tables("TableName eq @n", parameters={"n": names[2]})]
        assert found == [names[2]]
        query = "TableName ge @lo and TableName lt @hi"
        params = {"lo": prefix, "hi": prefix + "~"}
        pages = list(service.query_tables(query, parameters=params, results_per_page=2).by_page())
        page_items = [[t.name for t in page] for page in pages]
        assert [len(p) for p in page_items] == [2, 2, 1]
        assert [n for p in page_items for n in p] == names
    finally:
        for name in names:
            service.delete_table(name)


def test_delete_missing_table_is_quiet(service):
    # The SDK swallows the 404 ResourceNotFound of Delete Table.
    service.delete_table(unique_name())


def test_table_access_policy_round_trip(table):
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    expiry = start + timedelta(days=365 * 50)
    table.set_table_access_policy(
        {
            "readers": TableAccessPolicy(permission="r", start=start, expiry=expiry),
            "writers": TableAccessPolicy(permission="au", expiry=expiry),
            "empty": None,
        }
    )
    policies = table.get_table_access_policy()
    assert set(policies) == {"readers", "writers", "empty"}
    assert policies["readers"].permission == "r"
    assert policies["writers"].permission == "au"
    assert policies["empty"] is None or not policies["empty"].permission
    table.set_table_access_policy({})
    assert table.get_table_access_policy() == {}


def test_more_than_five_policies_is_rejected(table):
    expiry = datetime.now(timezone.utc) + timedelta(days=1)
    policies = {f"p{i}": TableAccessPolicy(permission="r", expiry=expiry) for i in range(6)}
    with pytest.raises((HttpResponseError, ValueError)) as info:
        table.set_table_access_policy(policies)
    if isinstance(info.value, HttpResponseError):
        assert info.value.status_code == 400
        assert error_code(info.value) == "InvalidXmlDocument"
