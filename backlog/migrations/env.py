"""Alembic environment of the backlog: the engine comes from ``backlog.migrate`` (config attribute), never an ini."""

from __future__ import annotations

from alembic import context

from backlog.models import Base
from sitewatch.migrations import run_env

run_env(context, Base.metadata)
