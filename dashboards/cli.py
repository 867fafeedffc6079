"""``sitewatch dashboards``: build the dashboards from code, push them to a Grafana."""

from __future__ import annotations

import os
from pathlib import Path

import click


@click.group()
def dashboards():
    """Grafana dashboards as code (site wall screen, city overview, detector tuning)."""


@dashboards.command()
@click.option("--out", type=click.Path(path_type=Path), help="output directory (default dashboards/generated)")
def build(out):
    """Generate the dashboard JSON from the Python definitions."""
    from dashboards.build import GENERATED, build_all

    for p in build_all(out or GENERATED):
        click.echo(f"wrote {p}")


@dashboards.command()
@click.option("--url", envvar="SW_GRAFANA_URL", required=True, help="Grafana base URL (or $SW_GRAFANA_URL)")
@click.option("--dir", "src", type=click.Path(exists=True, path_type=Path), help="JSON directory (default generated)")
@click.option("--build/--no-build", "rebuild", default=True, show_default=True, help="regenerate before pushing")
def push(url, src, rebuild):
    """Upload the dashboards through the Grafana HTTP API. The token comes ONLY from $SW_GRAFANA_TOKEN
    (a service-account token with the Editor role), never from the command line."""
    from dashboards.build import GENERATED, build_all
    from dashboards.push import push as do_push

    token = os.environ.get("SW_GRAFANA_TOKEN")
    if not token:
        raise click.ClickException("set SW_GRAFANA_TOKEN to a Grafana service-account token (Editor role)")
    src = src or GENERATED
    if rebuild and src == GENERATED:
        build_all(src)
    for res in do_push(url, token, sorted(Path(src).glob("*.json"))):
        click.echo(f"{res.get('status', 'ok')}: {res.get('url', '')} (version {res.get('version', '?')})")
