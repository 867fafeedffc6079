"""Alembic environment of the record (its own version table ``alembic_version_blackbox`` in the shared database);
the engine comes from ``blackbox.schema.MIGRATIONS``, never from an ini file."""

from __future__ import annotations

from alembic import context

from blackbox.schema import METADATA
from sitewatch.migrations import run_env

run_env(context, METADATA)
