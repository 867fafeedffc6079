"""Fixtures of the command tests: the backlog's databases (SQLite + a real PostgreSQL) and demo organisation,
the production mosquitto as shipped (tests/security), the real API with /commands mounted."""

from __future__ import annotations

from tests.backlog.conftest import Clock, actor, clock, db_url, finding, org, pg_server, pg_url  # noqa: F401
from tests.backlog.conftest import backlog  # noqa: F401
from tests.security.test_mqtt_deployed import broker, clients  # noqa: F401
