"""The command wire format (sitewatch.commands): what the device must refuse, and the replay guard. Pure."""

from __future__ import annotations

import base64
import json

import pytest

from sitewatch import commands as wire
from sitewatch.commands import Ack, Command, CommandRejected, ReplayGuard

NOW = 1_800_000_000_000


@pytest.fixture(scope="module")
def key():
    return wire.generate_key()


def cmd(**kw) -> Command:
    base = dict(site="cz-0001", gateway="gw-01", device="bc-01", action="cut_power", issued_ms=NOW, ttl_ms=60_000)
    base.update(kw)
    return Command.new(**base)


def reason(data: bytes, key, now=NOW, **kw) -> str:
    with pytest.raises(CommandRejected) as e:
        wire.verify(data, key.public_key(), now, **kw)
    return e.value.reason


def test_signed_command_verifies_and_round_trips(key):
    c = cmd(args={"breaker": 2})
    got = wire.verify(wire.sign(c, key), key.public_key(), NOW + 1000, site="cz-0001", gateway="gw-01")
    assert got == c
    assert wire.sign(c, key) == wire.sign(c, key)  # Ed25519 is deterministic: a retry is the same bytes


def test_forged_unsigned_expired_and_misdirected_commands_are_refused(key):
    c = cmd()
    good = json.loads(wire.sign(c, key))
    other = wire.generate_key()
    assert reason(wire.sign(c, other), key) == "unknown_key"  # signed by someone else's key
    forged = dict(good, cmd=dict(good["cmd"], device="bc-02"))  # the signed body edited
    assert reason(json.dumps(forged).encode(), key) == "bad_signature"
    spliced = dict(good, sig=json.loads(wire.sign(cmd(), key))["sig"])  # another command's valid signature
    assert reason(json.dumps(spliced).encode(), key) == "bad_signature"
    assert reason(json.dumps({"cmd": good["cmd"]}).encode(), key) == "unsigned"
    assert reason(json.dumps(dict(good, sig="")).encode(), key) == "unsigned"
    assert reason(json.dumps(dict(good, sig="!!notbase64")).encode(), key) == "bad_signature"
    assert reason(wire.sign(c, key), key, now=NOW + 60_000 + wire.DEFAULT_SKEW_MS + 1) == "expired"
    assert reason(wire.sign(c, key), key, now=NOW - wire.DEFAULT_SKEW_MS - 1) == "not_yet_valid"
    assert reason(wire.sign(c, key), key, gateway="gw-02") == "wrong_target"
    assert reason(wire.sign(c, key), key, site="cz-0002") == "wrong_target"
    for junk in (b"", b"[]", b"{", b'{"cmd": 1}', json.dumps({"cmd": dict(good["cmd"], extra=1)}).encode()):
        assert reason(junk, key) == "malformed"
    # within the skew both ways: accepted
    wire.verify(wire.sign(c, key), key.public_key(), NOW + 60_000 + wire.DEFAULT_SKEW_MS - 1)
    wire.verify(wire.sign(c, key), key.public_key(), NOW - wire.DEFAULT_SKEW_MS + 1)
    assert base64.b64decode(good["sig"])  # the envelope carries a real signature


def test_replay_guard_repeat_gets_stored_ack_reuse_is_a_replay():
    g = ReplayGuard(skew_ms=1000)
    c = cmd()
    assert g.check(c, NOW) is None  # new: act
    ack = Ack(c.id, c.site, c.gateway, c.device, "done", nonce=c.nonce, at_ms=NOW)
    g.remember(c, ack)
    assert g.check(c, NOW + 10) == ack  # the same message again (a retry): the stored ack, no second action
    reuse = Command(**{**c.to_dict(), "action": "siren"})  # another message with the same nonce
    with pytest.raises(CommandRejected) as e:
        g.check(reuse, NOW + 20)
    assert e.value.reason == "replay"
    same_id = cmd(id=c.id)  # the same command id under a fresh nonce
    with pytest.raises(CommandRejected) as e:
        g.check(same_id, NOW + 30)
    assert e.value.reason == "replay"
    # forgotten only after the command's expiry + skew, when freshness refuses it anyway
    assert len(g) == 1
    g.check(cmd(issued_ms=NOW + 70_000), NOW + 61_001 + 1000)
    assert c.nonce not in g._seen


def test_topics():
    assert wire.command_topic("cz-0001", "gw-01", "bc-01") == "sw/cz-0001/cmd/gw-01/bc-01"
    assert wire.parse_ack_topic("sw/cz-0001/ack/gw-01/bc-01") == ("cz-0001", "gw-01", "bc-01")
    assert wire.parse_ack_topic("sw/cz-0001/cmd/gw-01/bc-01") is None
