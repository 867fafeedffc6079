"""Alembic environment of the streams room (its own version table ``alembic_version_streams`` in the shared
database); the engine comes from ``streams.state_snapshots.MIGRATIONS``, never from an ini file."""

from __future__ import annotations

from alembic import context

from sitewatch.migrations import run_env
from streams.state_snapshots import METADATA

run_env(context, METADATA)
