"""Tampering in every way the issue names, on SQLite and PostgreSQL, and the exact finding the verifier gives:
which seq, which row, what kind of change. Plus: a wholly recomputed chain caught by an exported checkpoint, a
forged checkpoint, the CLI's exit code, and on PostgreSQL the append-only guard for the application's role."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from blackbox.chain import Recorder, entry_hash
from blackbox.checkpoints import export_file, keygen, load_public, read_exported, sign
from blackbox.signer import Checkpointer
from blackbox.verify import verify_site
from tests.blackbox.conftest import OTHER, SITE, attacker, build, payload, rehash, rows

T = 1_791_000_000_000


def first(rep):
    b = rep.first
    return None if b is None else (b.site, b.seq, b.row_id, b.change)


def test_intact_chain_verifies(recorder):
    build(recorder)
    rep = verify_site(recorder.engine, SITE)
    assert rep.ok and rep.entries == 12 and (rep.first_seq, rep.last_seq) == (1, 12)
    assert verify_site(recorder.engine, OTHER).ok


def test_edited_content(recorder):
    build(recorder)
    r5 = rows(recorder.engine)[5]
    with attacker(recorder.engine) as c:
        c.execute(text("UPDATE blackbox_entries SET payload = :p WHERE id = :id"),
                  {"p": payload({"n": 5, "what": "nothing happened"}), "id": r5["id"]})
    rep = verify_site(recorder.engine, SITE)
    assert first(rep) == (SITE, 5, r5["id"], "edited")
    assert "does not match its hash" in rep.first.detail
    assert verify_site(recorder.engine, OTHER).ok, "the other site's chain is untouched"


def test_edited_content_with_its_hash_recomputed(recorder):
    build(recorder)
    r5 = rows(recorder.engine)[5]
    p = payload({"n": 5, "what": "nothing happened"})
    with attacker(recorder.engine) as c:
        c.execute(text("UPDATE blackbox_entries SET payload = :p, hash = :h WHERE id = :id"),
                  {"p": p, "h": entry_hash(r5["prev"], SITE, 5, r5["kind"], r5["at_ms"], p), "id": r5["id"]})
    rep = verify_site(recorder.engine, SITE)
    assert first(rep) == (SITE, 5, r5["id"], "edited")
    assert "rewritten with a new hash" in rep.first.detail


def test_edited_time(recorder):
    build(recorder)
    r7 = rows(recorder.engine)[7]
    with attacker(recorder.engine) as c:
        c.execute(text("UPDATE blackbox_entries SET at_ms = at_ms - 3600000 WHERE id = :id"), {"id": r7["id"]})
    assert first(verify_site(recorder.engine, SITE)) == (SITE, 7, r7["id"], "edited")


def test_deleted_row(recorder):
    build(recorder)
    rs = rows(recorder.engine)
    with attacker(recorder.engine) as c:
        c.execute(text("DELETE FROM blackbox_entries WHERE id = :id"), {"id": rs[5]["id"]})
    rep = verify_site(recorder.engine, SITE)
    assert first(rep) == (SITE, 5, None, "deleted")
    assert rep.first.detail == f"seq 5 missing after row id {rs[4]['id']}, before row id {rs[6]['id']}"


def test_deleted_row_and_the_rest_renumbered(recorder):
    build(recorder)
    rs = rows(recorder.engine)
    with attacker(recorder.engine) as c:
        c.execute(text("DELETE FROM blackbox_entries WHERE id = :id"), {"id": rs[5]["id"]})
        for seq in range(6, 13):
            c.execute(text("UPDATE blackbox_entries SET seq = :n WHERE id = :id"), {"n": seq - 1, "id": rs[seq]["id"]})
        c.execute(text("UPDATE blackbox_heads SET seq = 11, hash = :h WHERE site = :s"),
                  {"h": rs[12]["hash"], "s": SITE})
    rep = verify_site(recorder.engine, SITE)
    assert first(rep) == (SITE, 5, None, "deleted")
    assert f"renumbered: row id {rs[6]['id']} was seq 6" in rep.first.detail


def test_deleted_tail_shows_against_the_head(recorder):
    build(recorder)
    with attacker(recorder.engine) as c:
        c.execute(text("DELETE FROM blackbox_entries WHERE site = :s AND seq >= 11"), {"s": SITE})
    rep = verify_site(recorder.engine, SITE)
    assert first(rep) == (SITE, 11, None, "deleted")
    assert "head says seq 12" in rep.first.detail


def _shift_up_from(c, rs, seq_from: int) -> None:
    for seq in sorted((s for s in rs if s >= seq_from), reverse=True):
        c.execute(text("UPDATE blackbox_entries SET seq = :n WHERE id = :id"), {"n": seq + 1, "id": rs[seq]["id"]})


@pytest.mark.parametrize("skilled", [True, False], ids=["with-valid-hash", "with-bogus-hash"])
def test_inserted_row(recorder, skilled):
    build(recorder)
    rs = rows(recorder.engine)
    p = payload({"n": 0, "what": "supervisor inspected the crane"})
    h = entry_hash(rs[4]["hash"], SITE, 5, "ticket", T + 4500, p) if skilled else "ab" * 32
    with attacker(recorder.engine) as c:
        _shift_up_from(c, rs, 5)
        c.execute(text("INSERT INTO blackbox_entries (site, seq, kind, at_ms, payload, prev, hash) "
                       "VALUES (:s, 5, 'ticket', :at, :p, :prev, :h)"),
                  {"s": SITE, "at": T + 4500, "p": p, "prev": rs[4]["hash"], "h": h})
    new_id = rows(recorder.engine)[5]["id"]
    rep = verify_site(recorder.engine, SITE)
    assert first(rep) == (SITE, 5, new_id, "inserted")


def test_inserted_past_the_head(recorder):
    build(recorder)
    rs = rows(recorder.engine)
    p = payload({"n": 13})
    with attacker(recorder.engine) as c:  # INSERT is all it takes; the forger even gets the hash right
        c.execute(text("INSERT INTO blackbox_entries (site, seq, kind, at_ms, payload, prev, hash) "
                       "VALUES (:s, 13, 'finding', :at, :p, :prev, :h)"),
                  {"s": SITE, "at": T + 13_000, "p": p, "prev": rs[12]["hash"],
                   "h": entry_hash(rs[12]["hash"], SITE, 13, "finding", T + 13_000, p)})
    assert first(verify_site(recorder.engine, SITE)) == (SITE, 13, None, "inserted")


def test_reordered_seqs(recorder):
    build(recorder)
    rs = rows(recorder.engine)
    with attacker(recorder.engine) as c:
        c.execute(text("UPDATE blackbox_entries SET seq = -5 WHERE id = :id"), {"id": rs[5]["id"]})
        c.execute(text("UPDATE blackbox_entries SET seq = 5 WHERE id = :id"), {"id": rs[6]["id"]})
        c.execute(text("UPDATE blackbox_entries SET seq = 6 WHERE id = :id"), {"id": rs[5]["id"]})
    rep = verify_site(recorder.engine, SITE)
    assert first(rep) == (SITE, 5, rs[6]["id"], "reordered")
    assert f"row id {rs[5]['id']} (stored as seq 6) belongs there" in rep.first.detail


def test_reordered_by_moving_contents_between_rows(recorder):
    build(recorder)
    rs = rows(recorder.engine)
    cols = ("seq", "kind", "at_ms", "payload", "prev", "hash")
    with attacker(recorder.engine) as c:
        c.execute(text("UPDATE blackbox_entries SET seq = -1 WHERE id = :id"), {"id": rs[5]["id"]})
        c.execute(text("UPDATE blackbox_entries SET seq = -2 WHERE id = :id"), {"id": rs[6]["id"]})
        for src, dst in ((6, 5), (5, 6)):
            c.execute(text(f"UPDATE blackbox_entries SET {', '.join(f'{k} = :{k}' for k in cols)} WHERE id = :id"),
                      {**{k: rs[src][k] for k in cols}, "id": rs[dst]["id"]})
    rep = verify_site(recorder.engine, SITE)
    assert first(rep) == (SITE, 5, rs[6]["id"], "reordered")
    assert "written after" in rep.first.detail


# ------------------------------------------------------------------------------------------------ checkpoints
@pytest.fixture
def keys(tmp_path) -> Path:
    kd = tmp_path / "keys"
    keygen(kd, SITE)
    return kd


def _checkpoint_at(rec: Recorder, keys: Path, out: Path, now: int) -> None:
    cp = Checkpointer(rec.engine, keys, export_dir=out, interval_s=300).checkpoint(SITE, now=now)
    assert cp is not None


def test_rewritten_chain_is_caught_by_an_exported_checkpoint(recorder, keys, tmp_path):
    out = tmp_path / "third-party"
    build(recorder, 8)
    _checkpoint_at(recorder, keys, out, now=T + 9_000)
    for i in range(9, 13):
        recorder.record([__import__("blackbox.chain").chain.NewEntry(SITE, "finding", T + i * 1000, {"n": i})])
    rs = rows(recorder.engine)
    with attacker(recorder.engine) as c:  # history changed at seq 3 and every hash recomputed: consistent again
        c.execute(text("UPDATE blackbox_entries SET payload = :p WHERE id = :id"),
                  {"p": payload({"n": 3, "what": "nothing happened"}), "id": rs[3]["id"]})
        rehash(c, SITE, 3)
    assert verify_site(recorder.engine, SITE, stored_checkpoints=False).ok, "on its own it looks fine"

    exported = read_exported(out, SITE)
    assert [cp.seq for cp in exported] == [8]
    rep = verify_site(recorder.engine, SITE, checkpoints=exported, public_key=load_public(keys, SITE),
                      stored_checkpoints=False)
    assert first(rep) == (SITE, 8, rs[8]["id"], "rewritten")
    assert "signed 2026-" in rep.first.detail and "rewritten from the first entry" in rep.first.detail


def test_tail_cut_and_head_fixed_is_caught_by_a_checkpoint(recorder, keys, tmp_path):
    out = tmp_path / "third-party"
    build(recorder)
    _checkpoint_at(recorder, keys, out, now=T + 13_000)
    rs = rows(recorder.engine)
    with attacker(recorder.engine) as c:
        c.execute(text("DELETE FROM blackbox_entries WHERE site = :s AND seq >= 11"), {"s": SITE})
        c.execute(text("UPDATE blackbox_heads SET seq = 10, hash = :h WHERE site = :s"), {"h": rs[10]["hash"], "s": SITE})
    rep = verify_site(recorder.engine, SITE, checkpoints=read_exported(out, SITE), public_key=load_public(keys, SITE))
    assert first(rep) == (SITE, 11, None, "deleted")
    assert "covers seq 12, but the chain ends at seq 10" in rep.first.detail


def test_forged_checkpoint(recorder, keys, tmp_path):
    out = tmp_path / "third-party"
    build(recorder)
    _checkpoint_at(recorder, keys, out, now=T + 13_000)
    assert verify_site(recorder.engine, SITE, checkpoints=read_exported(out, SITE),
                       public_key=load_public(keys, SITE)).ok
    # someone rewrote the chain and signs a matching checkpoint with a key of their own
    keygen(tmp_path / "forger", SITE)
    from blackbox.checkpoints import load_private

    fake = sign(load_private(tmp_path / "forger", SITE), SITE, 12, "cd" * 32, T + 12_000, T + 14_000)
    export_file(fake, out)  # lands beside the genuine one (same seq, newer file name wins nothing)
    doc = json.loads((out / SITE / "000000000012.json").read_text())
    assert doc["checkpoint"]["hash"] == "cd" * 32
    rep = verify_site(recorder.engine, SITE, checkpoints=read_exported(out, SITE), public_key=load_public(keys, SITE),
                      stored_checkpoints=False)
    assert first(rep) == (SITE, 12, None, "forged")
    assert "not signed by the site's key" in rep.first.detail


def test_checkpointer_refuses_to_sign_a_broken_chain(recorder, keys, tmp_path):
    build(recorder)
    with attacker(recorder.engine) as c:
        c.execute(text("UPDATE blackbox_entries SET payload = :p WHERE site = :s AND seq = 2"),
                  {"p": payload({"n": 2, "what": "x"}), "s": SITE})
    with pytest.raises(RuntimeError, match="refusing to sign"):
        Checkpointer(recorder.engine, keys, export_dir=tmp_path / "out").checkpoint(SITE)
    assert not (tmp_path / "out").exists()


def test_range_verification(recorder):
    build(recorder)
    r10 = rows(recorder.engine)[10]
    with attacker(recorder.engine) as c:
        c.execute(text("UPDATE blackbox_entries SET payload = :p WHERE id = :id"),
                  {"p": payload({"n": 10, "what": "x"}), "id": r10["id"]})
    assert verify_site(recorder.engine, SITE, from_ms=T + 3000, to_ms=T + 8000).ok
    rep = verify_site(recorder.engine, SITE, from_ms=T + 9000, to_ms=T + 11_000)
    assert first(rep) == (SITE, 10, r10["id"], "edited") and rep.entries == 3


def test_cli_verify_names_the_first_broken_link(recorder, keys, tmp_path, db_url):  # noqa: F811
    from app.cli import main

    build(recorder)
    out = tmp_path / "third-party"
    _checkpoint_at(recorder, keys, out, now=T + 13_000)
    args = ["--db", db_url, "verify", "--site", SITE, "--checkpoints", str(out), "--key-dir", str(keys)]
    ok = CliRunner().invoke(main, args)
    assert ok.exit_code == 0, ok.output
    assert "OK: every link verifies" in ok.output and "1 checkpoint(s) compared" in ok.output
    r5 = rows(recorder.engine)[5]
    with attacker(recorder.engine) as c:
        c.execute(text("DELETE FROM blackbox_entries WHERE id = :id"), {"id": r5["id"]})
    bad = CliRunner().invoke(main, args)
    assert bad.exit_code == 1
    assert f"first broken link: site {SITE} seq 5 (no row): deleted" in bad.output


# ------------------------------------------------------------------------------------------------ append-only
def test_application_cannot_update_or_delete_entries(recorder):
    build(recorder, 3)
    with recorder.engine.begin() as c:
        c.execute(text("INSERT INTO blackbox_checkpoints (site, seq, hash, signed_ms, key_id, body, signature) "
                       "VALUES ('s-1', 3, 'x', 0, 'k', '{}', 'sig')"))  # no checkpoint, but it is there
    for stmt in ("UPDATE blackbox_entries SET payload = '{}'", "DELETE FROM blackbox_entries",
                 "UPDATE blackbox_checkpoints SET seq = 0", "DELETE FROM blackbox_checkpoints"):
        with pytest.raises(DBAPIError, match="append-only"), recorder.engine.begin() as c:
            c.execute(text(stmt))
    if recorder.engine.dialect.name == "postgresql":
        with pytest.raises(DBAPIError, match="append-only"), recorder.engine.begin() as c:
            c.execute(text("TRUNCATE blackbox_entries"))
    assert len(rows(recorder.engine)) == 3
    rep = verify_site(recorder.engine, SITE)
    assert [(b.seq, b.change) for b in rep.findings] == [(3, "forged")], "only the bogus checkpoint row is wrong"


def test_postgres_application_role_has_only_select_and_insert(pg_url):  # noqa: F811
    """The grants of docs/evidence.md: the role the application runs as appends and verifies, and can neither
    change entries nor take the triggers away (it does not own the tables)."""
    Recorder(pg_url).close()  # migrated by the owner
    owner = create_engine(pg_url)
    with owner.begin() as c:
        c.execute(text("DROP ROLE IF EXISTS sw_app_test"))
        c.execute(text("CREATE ROLE sw_app_test LOGIN"))
        c.execute(text("GRANT SELECT, INSERT ON blackbox_entries, blackbox_checkpoints TO sw_app_test"))
        c.execute(text("GRANT SELECT, INSERT, UPDATE ON blackbox_heads TO sw_app_test"))
        c.execute(text("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO sw_app_test"))
        c.execute(text("GRANT SELECT ON alembic_version_blackbox TO sw_app_test"))
    app_url = pg_url.replace("postgres@", "sw_app_test@")
    try:
        rec = Recorder(app_url)  # migrating to head only reads the version table
        build(rec, 3)
        assert verify_site(rec.engine, SITE).ok
        for stmt in ("UPDATE blackbox_entries SET payload = '{}'", "DELETE FROM blackbox_entries",
                     "TRUNCATE blackbox_entries", "ALTER TABLE blackbox_entries DISABLE TRIGGER USER",
                     "DROP TRIGGER blackbox_entries_no_change ON blackbox_entries"):
            with pytest.raises(DBAPIError, match="append-only|permission denied|must be owner"), \
                    rec.engine.begin() as c:
                c.execute(text(stmt))
        assert len(rows(rec.engine)) == 3
        rec.close()
    finally:
        with owner.begin() as c:
            c.execute(text("DROP OWNED BY sw_app_test"))
            c.execute(text("DROP ROLE sw_app_test"))
        owner.dispose()
