"""Gateway provisioning as file logic: ids follow the contract, duplicates are refused, files are 0600 and the
password file holds only hashes mosquitto accepts. The broker-side proof is test_mqtt_deployed.py."""

from __future__ import annotations

import shutil
import base64
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import main
from ingest import provision
from ingest.provision import Gateway, ProvisionError

SHIPPED_ACL = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "sitewatch.acl"


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    acl = tmp_path / "sitewatch.acl"
    shutil.copy(SHIPPED_ACL, acl)
    return tmp_path / "sitewatch.passwd", acl


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize("site,gateway", [
    ("CZ-0412", "gw01"),  # upper case
    ("cz 0412", "gw01"),
    ("cz-0412", "gw/01"),  # would open other topics
    ("cz-0412", "gw+"),
    ("cz-0412", "#"),
    ("cz-0412", "gw@x"),  # the username separator
    ("cz-0412", "gw:01"),  # the password-file separator
    ("", "gw01"),
    ("-cz", "gw01"),
    ("cz-0412", "g" * 64),
])
def test_ids_outside_the_contract_are_refused(files, site, gateway):
    passwd, acl = files
    before = acl.read_text()
    with pytest.raises(ProvisionError, match="not a valid SiteWatch id"):
        provision.add_gateway(site, gateway, passwd, acl)
    assert acl.read_text() == before and not passwd.exists()


def test_add_writes_a_hash_and_an_acl_block_with_mode_0600(files):
    passwd, acl = files
    gw, password = provision.add_gateway("cz-0412", "gw01", passwd, acl)
    assert gw.username == "gw01@cz-0412" and len(password) >= 32
    assert mode(passwd) == 0o600 and mode(acl) == 0o600
    (line,) = passwd.read_text().splitlines()
    assert line.startswith("gw01@cz-0412:$7$") and password not in passwd.read_text()
    assert provision.check_password_line(line, password) and not provision.check_password_line(line, password + "x")
    text = acl.read_text()
    assert text.startswith(SHIPPED_ACL.read_text().rstrip("\n")), "the hand-written head is kept verbatim"
    block = text.split(provision.MANAGED_MARKER, 1)[1]
    assert "user gw01@cz-0412" in block and "topic write sw/cz-0412/gateway/gw01/+" in block
    assert "topic read sw/cz-0412/cmd/gw01/#" in block and "topic write sw/cz-0412/ack/gw01/#" in block
    assert "cmd" not in "".join(ln for ln in block.splitlines() if ln.startswith("topic write")), \
        "a gateway never gets write access to command topics"
    assert provision.list_gateways(acl) == [Gateway("cz-0412", "gw01")]


def test_duplicates_are_refused_and_files_untouched(files):
    passwd, acl = files
    provision.add_gateway("cz-0412", "gw01", passwd, acl)
    before = (passwd.read_text(), acl.read_text())
    with pytest.raises(ProvisionError, match="already exists"):
        provision.add_gateway("cz-0412", "gw01", passwd, acl)
    assert (passwd.read_text(), acl.read_text()) == before
    provision.add_gateway("cz-0413", "gw01", passwd, acl)  # same gateway id at another site is another account
    assert [g.username for g in provision.list_gateways(acl)] == ["gw01@cz-0412", "gw01@cz-0413"]


def test_rotate_replaces_only_that_password_and_remove_revokes(files):
    passwd, acl = files
    _, pw1 = provision.add_gateway("cz-0412", "gw01", passwd, acl)
    _, pw2 = provision.add_gateway("cz-0412", "gw02", passwd, acl)
    new = provision.rotate_password("gw01@cz-0412", passwd, acl)
    lines = dict(ln.split(":", 1) for ln in passwd.read_text().splitlines())
    assert provision.check_password_line(f"x:{lines['gw01@cz-0412']}", new)
    assert not provision.check_password_line(f"x:{lines['gw01@cz-0412']}", pw1)
    assert provision.check_password_line(f"x:{lines['gw02@cz-0412']}", pw2)
    provision.remove_gateway("cz-0412", "gw01", passwd, acl)
    assert "gw01@cz-0412" not in passwd.read_text() and "gw01@cz-0412" not in acl.read_text()
    assert provision.list_gateways(acl) == [Gateway("cz-0412", "gw02")]
    with pytest.raises(ProvisionError, match="no gateway"):
        provision.remove_gateway("cz-0412", "gw01", passwd, acl)
    with pytest.raises(ProvisionError, match="no such account"):
        provision.rotate_password("gw01@cz-0412", passwd, acl)
    assert mode(passwd) == 0o600 and mode(acl) == 0o600


def test_service_accounts_get_passwords_only_when_declared(files):
    passwd, acl = files
    pw = provision.rotate_password(provision.BRIDGE_USER, passwd, acl, create=True)
    assert provision.has_password(provision.BRIDGE_USER, passwd)
    assert provision.check_password_line(passwd.read_text().splitlines()[0], pw)
    with pytest.raises(ProvisionError, match="no such account"):
        provision.rotate_password("root", passwd, acl, create=True)


def test_missing_acl_file_is_refused_with_the_fix(tmp_path: Path):
    with pytest.raises(ProvisionError, match="install deploy/mosquitto/sitewatch.acl"):
        provision.add_gateway("cz-0412", "gw01", tmp_path / "p", tmp_path / "missing.acl")


def test_our_fallback_hash_and_mosquitto_passwd_agree():
    """Hosts without mosquitto_passwd write the $7$ format themselves: both must verify the same password."""
    assert shutil.which("mosquitto_passwd"), "the comparison needs Debian's mosquitto_passwd (make deps)"
    line = provision.hash_password("gw01@cz-0412", "correct horse")
    _, rest = line.split(":", 1)
    _, _, iterations, salt, _ = rest.split("$")
    ours = provision.pbkdf2_line("gw01@cz-0412", "correct horse", base64.b64decode(salt), int(iterations))
    assert ours == line, "same salt and iterations must give mosquitto_passwd's exact line"


def test_cli_add_list_remove(files, tmp_path: Path):
    passwd, acl = files
    opts = ["--passwd-file", str(passwd), "--acl-file", str(acl)]
    runner = CliRunner()
    out_file = tmp_path / "gw01.secret"
    r = runner.invoke(main, ["gateway", "add", "--site", "cz-0412", "--gateway", "gw01", *opts,
                             "--password-out", str(out_file)])
    assert r.exit_code == 0, r.output
    secret = out_file.read_text().strip()
    assert mode(out_file) == 0o600 and secret not in r.output, "written to the file, not printed"
    assert "SIGHUP" in r.output or "reload" in r.output
    assert provision.check_password_line(passwd.read_text().splitlines()[0], secret)
    r = runner.invoke(main, ["gateway", "add", "--site", "cz-0412", "--gateway", "gw02", *opts])
    assert r.exit_code == 0, r.output
    printed = [ln.split(":", 1)[1].strip() for ln in r.output.splitlines() if ln.startswith("password:")]
    assert len(printed) == 1 and provision.check_password_line(passwd.read_text().splitlines()[1], printed[0])
    r = runner.invoke(main, ["gateway", "add", "--site", "cz-0412", "--gateway", "gw02", *opts])
    assert r.exit_code != 0 and "already exists" in r.output
    r = runner.invoke(main, ["gateway", "add", "--site", "CZ", "--gateway", "gw02", *opts])
    assert r.exit_code != 0 and "not a valid SiteWatch id" in r.output
    r = runner.invoke(main, ["gateway", "list", *opts])
    assert r.exit_code == 0 and r.output.split() == ["cz-0412", "gw01", "gw01@cz-0412", "cz-0412", "gw02",
                                                      "gw02@cz-0412"], r.output
    r = runner.invoke(main, ["gateway", "remove", "--site", "cz-0412", "--gateway", "gw01", *opts])
    assert r.exit_code == 0, r.output
    assert [g.gateway for g in provision.list_gateways(acl)] == ["gw02"]
