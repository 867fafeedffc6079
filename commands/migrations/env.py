"""Alembic environment of the command ledger (own version table ``alembic_version_commands`` in the shared
database); the engine comes from ``commands.schema.MIGRATIONS``, never from an ini file."""

from __future__ import annotations

from alembic import context

from commands.schema import METADATA
from sitewatch.migrations import run_env

run_env(context, METADATA)
