"""Commands to site devices: ledger, policy (two-person rule), the signing service and its API/CLI.

The wire format both ends share lives in the core (``sitewatch.commands``); this room is the sending side."""
