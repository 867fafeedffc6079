"""Gateway accounts of the production mosquitto: password-file entries and per-gateway ACL blocks.

Operators never edit ``sitewatch.passwd`` or ``sitewatch.acl`` by hand: a typo in an ACL silently drops a site's
readings (mosquitto refuses unauthorised publishes without telling a v3.1.1 client), and a hand-made password line
is a clear-text password. This module is pure file logic (no broker): ``sitewatch gateway add|rotate|remove|list``
call it, then the operator reloads mosquitto (SIGHUP), which re-reads both files.

Why one ``user`` block per gateway and not one ``pattern`` line: mosquitto substitutes only the whole username
(``%u``) or client id (``%c``) into a pattern, and site and gateway ids may contain dots, so a username like
``gw.<site>.<gateway>`` cannot be split by the broker. A pattern would force one account per *site* (username =
site id), shared by all its gateways: revoking a stolen gateway would re-key the whole site, and any gateway could
publish another gateway's frames and last will. Generated blocks give each gateway its own password and confine it
to its own site and its own gateway topics, and the tool keeps them consistent.

Usernames are ``<gateway>@<site>``: ``@`` is outside the contract's id alphabet, so the pair is unambiguous.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from sitewatch.contracts import FAMILIES, GATEWAY, MQTT_ROOT, InvalidReading, check_id

DEFAULT_PASSWD_FILE = Path("/etc/mosquitto/sitewatch.passwd")
DEFAULT_ACL_FILE = Path("/etc/mosquitto/sitewatch.acl")
# Service accounts declared in the shipped ACL (deploy/mosquitto/sitewatch.acl): the bridge reads everything,
# the command service is the only publisher of commands.
BRIDGE_USER = "sitewatch-bridge"
COMMAND_USER = "sitewatch-command"
SERVICE_USERS = (BRIDGE_USER, COMMAND_USER)
CMD = "cmd"  # sw/<site>/cmd/<gateway>/<device>: commands (only the command service publishes; sitewatch.commands)
ACK = "ack"  # sw/<site>/ack/<gateway>/<device>: a gateway's acknowledgements
SEPARATOR = "@"
MANAGED_MARKER = "# --- gateways: written by `sitewatch gateway`, do not edit below this line ---"
FILE_MODE = 0o600
PASSWORD_BYTES = 24  # 192 bits, 32 URL-safe characters: typed once into a gateway's config, never remembered
# mosquitto 2.0's own $7$ parameters (mosquitto_passwd): PBKDF2-SHA512, 101 iterations, 12-byte salt.
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12

_USER_LINE = re.compile(r"^user\s+(\S+)\s*$")


class ProvisionError(ValueError):
    """Refused: bad id, duplicate, unknown gateway, missing ACL file."""


@dataclass(frozen=True, order=True)
class Gateway:
    site: str
    gateway: str

    def __post_init__(self) -> None:
        for kind, value in (("site", self.site), ("gateway", self.gateway)):
            try:
                check_id(kind, value)
            except InvalidReading as e:
                raise ProvisionError(f"{kind} id {value!r} is not a valid SiteWatch id ({e.detail})") from None

    @property
    def username(self) -> str:
        return f"{self.gateway}{SEPARATOR}{self.site}"

    @classmethod
    def from_username(cls, username: str) -> "Gateway":
        gateway, sep, site = username.partition(SEPARATOR)
        if not sep:
            raise ProvisionError(f"{username!r} is not a gateway account (<gateway>@<site>)")
        return cls(site, gateway)

    def acl_lines(self) -> list[str]:
        """What this gateway may do: publish its own site's readings, its own frames/status and its own
        acknowledgements, read its own commands (``sw/<site>/cmd/<gateway>/#``: not another gateway's, so one
        stolen gateway cannot learn what the others are told). Allow-lists only: mosquitto's ``deny`` would also
        block the reads."""
        s = f"{MQTT_ROOT}/{self.site}"
        return [
            f"# gateway {self.gateway} of site {self.site}",
            f"user {self.username}",
            f"topic write {s}/{GATEWAY}/{self.gateway}/+",
            *(f"topic write {s}/{family}/+/+" for family in FAMILIES),
            f"topic write {s}/{ACK}/{self.gateway}/#",
            f"topic read {s}/{CMD}/{self.gateway}/#",
        ]


# ---------------------------------------------------------------------------------------------- passwords
def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def hash_password(username: str, password: str) -> str:
    """One ``user:$7$...`` password-file line, hashed by Debian's ``mosquitto_passwd`` (the broker's own code).

    The password goes through a 0600 temporary file and ``mosquitto_passwd -U`` rather than ``-b``: on the
    command line it would be readable in /proc by every local user while the tool runs.
    """
    if ":" in username or "\n" in username or "\n" in password:
        raise ProvisionError(f"username {username!r} / password cannot go into a mosquitto password file")
    tool = shutil.which("mosquitto_passwd") or ("/usr/bin/mosquitto_passwd"
                                                if Path("/usr/bin/mosquitto_passwd").exists() else None)
    if tool is None:
        return pbkdf2_line(username, password)
    fd, tmp = tempfile.mkstemp(prefix="sitewatch-pw-")  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{username}:{password}\n")
        r = subprocess.run([tool, "-U", tmp], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise ProvisionError(f"mosquitto_passwd failed: {r.stderr.strip() or r.stdout.strip()}")
        line = Path(tmp).read_text().strip()
    finally:
        os.unlink(tmp)
    if not line.startswith(f"{username}:$"):
        raise ProvisionError("mosquitto_passwd did not hash the password")
    return line


def pbkdf2_line(username: str, password: str, salt: bytes | None = None,
                iterations: int = PBKDF2_ITERATIONS) -> str:
    """mosquitto 2.0's ``$7$`` format, for hosts without mosquitto_passwd (the broker is elsewhere)."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"{username}:$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def check_password_line(line: str, password: str) -> bool:
    """Does this ``$7$`` password-file line accept ``password``? (The tests compare our hashes with the tool's.)"""
    try:
        _user, rest = line.strip().split(":", 1)
        _, seven, iterations, salt, digest = rest.split("$")
    except ValueError:
        return False
    if seven != "7":
        return False
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations))
    return secrets.compare_digest(got, base64.b64decode(digest))


# ---------------------------------------------------------------------------------------------- files
@contextlib.contextmanager
def _locked(passwd_file: Path) -> Iterator[None]:
    """One operator at a time: two concurrent ``add`` would each rewrite the files from the same old copy."""
    lock = passwd_file.with_name(passwd_file.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_atomic(path: Path, text: str, like: Path | None = None) -> None:
    """Replace ``path`` in one rename, mode 0600, keeping its owner, or taking ``like``'s owner for a new file.

    mosquitto re-reads both files at SIGHUP as the unprivileged ``mosquitto`` user: a password file created by
    root with mode 0600 would lock every client out at the next reload. It must never see half a file either.
    """
    owner = None
    for source in (path, like):
        if source is not None and source.exists():
            st = source.stat()
            owner = (st.st_uid, st.st_gid)
            break
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        if owner is not None and os.geteuid() == 0:
            os.chown(tmp, *owner)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read_passwd(passwd_file: Path) -> list[str]:
    return passwd_file.read_text().splitlines() if passwd_file.exists() else []


def _passwd_users(lines: list[str]) -> set[str]:
    return {ln.split(":", 1)[0] for ln in lines if ln.strip() and not ln.lstrip().startswith("#")}


def _split_acl(acl_file: Path) -> tuple[str, list[Gateway]]:
    """(hand-written head incl. service accounts, gateways of the managed section)."""
    if not acl_file.exists():
        raise ProvisionError(f"{acl_file} does not exist: install deploy/mosquitto/sitewatch.acl there first "
                             "(it declares the bridge and command-service accounts)")
    text = acl_file.read_text()
    head, marker, managed = text.partition(MANAGED_MARKER)
    gateways = []
    for line in managed.splitlines():
        m = _USER_LINE.match(line.strip())
        if m:
            gateways.append(Gateway.from_username(m.group(1)))
    if not marker and any(_USER_LINE.match(ln.strip()) and SEPARATOR in ln for ln in head.splitlines()):
        raise ProvisionError(f"{acl_file} has gateway blocks but no managed section: not written by this tool")
    return head.rstrip("\n") + "\n", gateways


def render_acl(head: str, gateways: list[Gateway]) -> str:
    """The whole ACL: the hand-written head, then every gateway's block, re-rendered from the current contract
    (a family added in a SiteWatch upgrade reaches every gateway at the next ``add``/``remove``/``sync``)."""
    out = [head.rstrip("\n"), "", MANAGED_MARKER]
    for gw in sorted(set(gateways)):
        out += ["", *gw.acl_lines()]
    return "\n".join(out) + "\n"


def list_gateways(acl_file: Path = DEFAULT_ACL_FILE) -> list[Gateway]:
    return sorted(_split_acl(acl_file)[1])


def add_gateway(site: str, gateway: str, passwd_file: Path = DEFAULT_PASSWD_FILE, acl_file: Path = DEFAULT_ACL_FILE,
                password: str | None = None) -> tuple[Gateway, str]:
    """Create a gateway account; returns it and its password (shown once, stored only as a hash)."""
    gw = Gateway(site, gateway)
    with _locked(passwd_file):
        head, gateways = _split_acl(acl_file)
        lines = _read_passwd(passwd_file)
        if gw in gateways or gw.username in _passwd_users(lines):
            raise ProvisionError(f"gateway {gateway!r} of site {site!r} already exists ({gw.username}); "
                                 "use `sitewatch gateway rotate` for a new password")
        password = password or new_password()
        _write_atomic(passwd_file, "\n".join([*lines, hash_password(gw.username, password)]) + "\n", like=acl_file)
        _write_atomic(acl_file, render_acl(head, [*gateways, gw]))
    return gw, password


def rotate_password(username: str, passwd_file: Path = DEFAULT_PASSWD_FILE, acl_file: Path = DEFAULT_ACL_FILE,
                    password: str | None = None, create: bool = False) -> str:
    """A new password for an existing account (a gateway, or a service account with ``create``)."""
    with _locked(passwd_file):
        _head, gateways = _split_acl(acl_file)
        known = {g.username for g in gateways} | set(SERVICE_USERS)
        if username not in known:
            raise ProvisionError(f"no such account {username!r} in {acl_file}")
        lines = _read_passwd(passwd_file)
        kept = [ln for ln in lines if ln.split(":", 1)[0] != username]
        if len(kept) == len(lines) and not create:
            raise ProvisionError(f"{username!r} has no password in {passwd_file}")
        password = password or new_password()
        _write_atomic(passwd_file, "\n".join([*kept, hash_password(username, password)]) + "\n", like=acl_file)
    return password


def remove_gateway(site: str, gateway: str, passwd_file: Path = DEFAULT_PASSWD_FILE,
                   acl_file: Path = DEFAULT_ACL_FILE) -> Gateway:
    """Revoke a gateway: its password line and its ACL block go; after SIGHUP mosquitto disconnects it."""
    gw = Gateway(site, gateway)
    with _locked(passwd_file):
        head, gateways = _split_acl(acl_file)
        lines = _read_passwd(passwd_file)
        if gw not in gateways and gw.username not in _passwd_users(lines):
            raise ProvisionError(f"no gateway {gateway!r} of site {site!r} ({gw.username})")
        _write_atomic(passwd_file, "".join(ln + "\n" for ln in lines if ln.split(":", 1)[0] != gw.username))
        _write_atomic(acl_file, render_acl(head, [g for g in gateways if g != gw]))
    return gw


def sync_acl(passwd_file: Path = DEFAULT_PASSWD_FILE, acl_file: Path = DEFAULT_ACL_FILE) -> list[Gateway]:
    """Re-render every gateway block from the current contract (after an upgrade that adds a family)."""
    with _locked(passwd_file):
        head, gateways = _split_acl(acl_file)
        _write_atomic(acl_file, render_acl(head, gateways))
    return sorted(gateways)


def has_password(username: str, passwd_file: Path = DEFAULT_PASSWD_FILE) -> bool:
    return username in _passwd_users(_read_passwd(passwd_file))


RELOAD_HINT = ("reload mosquitto so it re-reads the password and ACL files: "
               "systemctl reload mosquitto  (or: kill -HUP $(pidof mosquitto))")
