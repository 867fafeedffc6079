"""Grafana dashboards as code (grafana-foundation-sdk) over the sink's InfluxDB layout.

``sitewatch dashboards build`` writes ``generated/*.json``; ``provisioning/`` holds Grafana's datasource and
dashboard provider files; ``sitewatch dashboards push`` uploads through the HTTP API. See docs/dashboards.md.
"""
