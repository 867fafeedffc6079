"""The tamper-evident record: one append-only hash chain per site (issue 14).

Every batch of readings received, every finding, every ticket transition and acknowledgement, every alert
delivered (and, later, every command) becomes an entry whose hash covers the entry before it. Signed checkpoints
held by a third party make a wholly recomputed chain detectable too. See docs/evidence.md.

This room sits below the rooms that write to it (streams, backlog, alerts, ingest) and imports only the core.
"""
