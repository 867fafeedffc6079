"""The one signed-claims format shared by acknowledgement links and the wall's login links."""

from sitewatch.signed import sign, unsign


def test_round_trip_and_every_kind_of_bad_token():
    tok = sign("k", {"t": 7, "u": "王工", "e": 2_000})
    assert unsign("k", tok, now_s=1_999) == {"t": 7, "u": "王工", "e": 2_000}
    assert unsign("k", tok, now_s=2_001) is None, "expired"
    assert unsign("other", tok, now_s=1_000) is None, "wrong secret"
    body, mac = tok.split(".")
    forged = sign("k", {"t": 8, "u": "王工", "e": 2_000}).split(".")[0] + "." + mac
    assert unsign("k", forged, now_s=1_000) is None, "claims changed under the old signature"
    for junk in ("", "a.b.c", "no-dot", body, "." + mac, "%%%." + mac):
        assert unsign("k", junk, now_s=1_000) is None
    assert unsign("k", sign("k", {"e": 2_000}) + "x", now_s=1_000) is None
