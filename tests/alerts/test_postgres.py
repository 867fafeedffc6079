"""The delivery log on PostgreSQL (production): the notifier-restart guarantee, storm grouping, silences and the
append-only audit trail behave as on SQLite. Uses the throwaway PostgreSQL 15 of the backlog tests."""

from __future__ import annotations

import pytest
from tests.alerts import test_delivery, test_storm
from tests.backlog.conftest import pg_server, pg_url  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration


@pytest.fixture
def db_url(pg_url):  # noqa: F811 - every test below runs on PostgreSQL
    return pg_url


def test_restart_mid_delivery_on_postgres(http, secrets_env, db_url, clock):
    test_delivery.test_notifier_killed_mid_delivery_loses_and_duplicates_nothing(http, secrets_env, db_url, clock)


def test_storm_grouping_on_postgres(http, secrets_env, db_url, clock):
    test_storm.test_a_sites_storm_becomes_one_message(http, secrets_env, db_url, clock)


def test_silence_and_append_only_audit_on_postgres(http, secrets_env, db_url, clock):
    test_storm.test_silence_with_expiry_and_audit(http, secrets_env, db_url, clock)


def test_two_notifiers_racing_on_postgres(http, secrets_env, db_url, clock):
    test_delivery.test_two_notifiers_racing_send_each_message_once(http, secrets_env, db_url, clock)
