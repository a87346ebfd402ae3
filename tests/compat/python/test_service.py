"""Service properties (incl. CORS), service stats, and authentication failures."""

import pytest
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import ClientAuthenticationError
from azure.data.tables import (
    TableAnalyticsLogging,
    TableCorsRule,
    TableMetrics,
    TableRetentionPolicy,
    TableServiceClient,
)

from conftest import ACCOUNT_NAME, error_code


def test_service_properties_round_trip(service):
    original = service.get_service_properties()
    assert set(original) >= {"analytics_logging", "hour_metrics", "minute_metrics", "cors"}
    try:
        rule = TableCorsRule(["https://app.example"], ["GET", "PUT"], max_age_in_seconds=60,
                             exposed_headers=["x-ms-request-id"], allowed_headers=["x-ms-*"])
        service.set_service_properties(
            analytics_logging=TableAnalyticsLogging(read=True, retention_policy=TableRetentionPolicy(enabled=True, days=5)),
            hour_metrics=TableMetrics(enabled=True, include_apis=True, retention_policy=TableRetentionPolicy(enabled=True, days=3)),
            cors=[rule],
        )
        props = service.get_service_properties()
        assert props["analytics_logging"].read is True
        assert props["analytics_logging"].retention_policy.days == 5
        assert props["hour_metrics"].enabled is True
        assert len(props["cors"]) == 1
        assert props["cors"][0].allowed_origins == ["https://app.example"]
        assert props["cors"][0].max_age_in_seconds == 60
        # Setting only CORS keeps the logging settings (Azure merges top-level elements).
        service.set_service_properties(cors=[])
        assert service.get_service_properties()["analytics_logging"].read is True
    finally:
        service.set_service_properties(
            analytics_logging=original["analytics_logging"],
            hour_metrics=original["hour_metrics"],
            minute_metrics=original["minute_metrics"],
            cors=original["cors"],
        )


def test_service_stats_from_the_secondary(service):
    stats = service.get_service_stats()
    assert stats["geo_replication"]["status"] == "live"


def test_wrong_key_is_authentication_failed(endpoint):
    bad = AzureNamedKeyCredential(ACCOUNT_NAME, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==")
    client = TableServiceClient(endpoint, credential=bad)
    with pytest.raises(ClientAuthenticationError) as info:
        list(client.list_tables())
    assert info.value.status_code == 403
    assert error_code(info.value) == "AuthenticationFailed"
