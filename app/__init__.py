"""The application: the ``sitewatch`` command and what it wires together and starts (worker, bridge, demo, local
stack, benchmarks). The one package allowed to import every room; no room imports it."""
