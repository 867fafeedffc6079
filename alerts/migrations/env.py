"""Alembic environment of the alerts room (its own version table ``alembic_version_alerts`` in the shared
database); the engine comes from ``alerts.delivery_log.MIGRATIONS``, never from an ini file."""

from __future__ import annotations

from alembic import context

from alerts.delivery_log import AlertsBase
from sitewatch.migrations import run_env

run_env(context, AlertsBase.metadata)
