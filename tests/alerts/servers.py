"""Real local receivers for the channel tests: one HTTP server that plays the webhook, Aliyun SMS, Tencent Cloud
SMS, WeCom and DingTalk endpoints (each VERIFYING the request signature the way the provider documents it), and
a tiny SMTP server (EHLO, AUTH PLAIN/LOGIN, MAIL, RCPT, DATA) — sockets and threads, no mocks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socketserver
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit


@dataclass
class Req:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw: bytes
    status: int
    verified: bool | None  # the provider-style signature check: None when the path does not sign
    why: str = ""
    peer: tuple = ()  # the sender's (address, port): the same for requests that came over one kept-open connection

    @property
    def json(self) -> Any:
        return json.loads(self.raw)

    @property
    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.raw.decode(), keep_blank_values=True).items()}


# --------------------------------------------------------------------------------------------- provider checks
def _pe(s: str) -> str:
    return quote(s, safe="-_.~")


def aliyun_check(form: dict[str, str], secret: str) -> tuple[bool, str]:
    """Recompute the Aliyun RPC signature (independently of the sender's code)."""
    canon = "&".join(f"{_pe(k)}={_pe(v)}" for k, v in sorted(form.items()) if k != "Signature")
    sts = "POST&%2F&" + _pe(canon)
    want = base64.b64encode(hmac.new((secret + "&").encode(), sts.encode(), hashlib.sha1).digest()).decode()
    if not hmac.compare_digest(want, form.get("Signature", "")):
        return False, "bad signature"
    for k in ("AccessKeyId", "Action", "SignatureNonce", "Timestamp", "PhoneNumbers", "TemplateCode", "SignName"):
        if not form.get(k):
            return False, f"missing {k}"
    return True, ""


def tencent_check(headers: dict[str, str], body: bytes, secret_id: str, secret_key: str) -> tuple[bool, str]:
    auth = headers.get("Authorization", "")
    try:
        algo, rest = auth.split(" ", 1)
        parts = dict(p.strip().split("=", 1) for p in rest.split(","))
        cred = parts["Credential"].split("/")
    except (ValueError, KeyError):
        return False, "malformed Authorization"
    if algo != "TC3-HMAC-SHA256" or cred[0] != secret_id or cred[2:] != ["sms", "tc3_request"]:
        return False, "wrong credential scope"
    ts = int(headers["X-TC-Timestamp"])
    date = time.strftime("%Y-%m-%d", time.gmtime(ts))
    if cred[1] != date or abs(time.time() - ts) > 300:
        return False, "stale timestamp"
    signed = parts["SignedHeaders"].split(";")
    lower = {k.lower(): v for k, v in headers.items()}
    canon_headers = "".join(f"{h}:{lower[h].strip().lower()}\n" for h in signed)
    canonical = f"POST\n/\n\n{canon_headers}\n{parts['SignedHeaders']}\n{hashlib.sha256(body).hexdigest()}"
    sts = f"TC3-HMAC-SHA256\n{ts}\n{date}/sms/tc3_request\n{hashlib.sha256(canonical.encode()).hexdigest()}"

    def h(k: bytes, m: str) -> bytes:
        return hmac.new(k, m.encode(), hashlib.sha256).digest()

    k = h(h(h(("TC3" + secret_key).encode(), date), "sms"), "tc3_request")
    want = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, parts.get("Signature", "")):
        return False, "bad signature"
    if headers.get("X-TC-Action") != "SendSms":
        return False, "wrong action"
    return True, ""


def dingtalk_check(query: dict[str, str], token: str, secret: str) -> tuple[bool, str]:
    if query.get("access_token") != token:
        return False, "wrong access_token"
    ts = query.get("timestamp", "0")
    want = base64.b64encode(hmac.new(secret.encode(), f"{ts}\n{secret}".encode(), hashlib.sha256).digest()).decode()
    if not hmac.compare_digest(want, query.get("sign", "")):
        return False, "bad sign"
    if abs(time.time() * 1000 - int(ts)) > 3_600_000:
        return False, "timestamp more than an hour off"
    return True, ""


@dataclass
class HttpReceiver:
    """Paths: /hook (generic webhook, HMAC), /aliyun, /tencent, /wecom, /dingtalk. Behaviour knobs per path:
    ``fail[path] = N`` answers the next N requests 500, ``hang[path] = seconds`` delays the answer."""

    webhook_secret: str = "hook-secret"
    aliyun: tuple[str, str] = ("LTAIak", "aliyun-secret")
    tencent: tuple[str, str] = ("AKIDtest", "tencent-secret")
    wecom_key: str = "wecom-key-123456"
    dingtalk: tuple[str, str] = ("ding-token-abc", "SECding-secret")
    requests: list[Req] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)
    hang: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        rec = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                u = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                query = {k: v[0] for k, v in parse_qs(u.query).items()}
                headers = dict(self.headers)
                path = u.path
                if rec.hang.get(path):
                    time.sleep(rec.hang[path])
                if rec.fail.get(path, 0) > 0:
                    rec.fail[path] -= 1
                    rec.requests.append(Req(path, query, headers, raw, 500, None, "fail injected",
                                            self.client_address))
                    return self._answer(500, {"error": "injected"})
                ok, why, answer = rec._check(path, query, headers, raw)
                status = 200 if ok in (True, None) or path in ("/wecom", "/dingtalk", "/aliyun") else 401
                rec.requests.append(Req(path, query, headers, raw, status, ok, why, self.client_address))
                self._answer(status, answer)

            def _answer(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:
                    pass

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _check(self, path, query, headers, raw) -> tuple[bool | None, str, dict]:
        if path == "/hook":
            want = "sha256=" + hmac.new(self.webhook_secret.encode(), raw, hashlib.sha256).hexdigest()
            ok = hmac.compare_digest(want, headers.get("X-SiteWatch-Signature", ""))
            return ok, "" if ok else "bad hmac", {"ok": ok}
        if path == "/aliyun":
            form = {k: v[0] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
            ok, why = aliyun_check(form, self.aliyun[1])
            if form.get("AccessKeyId") != self.aliyun[0]:
                ok, why = False, "unknown AccessKeyId"
            return ok, why, ({"Code": "OK", "Message": "OK", "BizId": "1", "RequestId": "r"} if ok else
                             {"Code": "SignatureDoesNotMatch", "Message": why, "RequestId": "r"})
        if path == "/tencent":
            ok, why = tencent_check(headers, raw, *self.tencent)
            if not ok:
                return ok, why, {"Response": {"Error": {"Code": "AuthFailure.SignatureFailure", "Message": why},
                                              "RequestId": "r"}}
            body = json.loads(raw)
            return ok, why, {"Response": {"SendStatusSet": [{"Code": "Ok", "PhoneNumber": p, "Message": "send success"}
                                                            for p in body["PhoneNumberSet"]], "RequestId": "r"}}
        if path == "/wecom":
            ok = query.get("key") == self.wecom_key
            return ok, "" if ok else "invalid key", ({"errcode": 0, "errmsg": "ok"} if ok else
                                                     {"errcode": 93000, "errmsg": "invalid webhook url"})
        if path == "/dingtalk":
            ok, why = dingtalk_check(query, *self.dingtalk)
            return ok, why, ({"errcode": 0, "errmsg": "ok"} if ok else {"errcode": 310000, "errmsg": why})
        return None, "", {"ok": True}

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def got(self, path: str, ok_only: bool = True) -> list[Req]:
        return [r for r in self.requests if r.path == path and (not ok_only or r.status == 200)]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------------------------- SMTP
@dataclass
class Mail:
    mail_from: str
    rcpt_to: list[str]
    data: bytes
    auth_user: str | None

    @property
    def message(self):
        return message_from_bytes(self.data, policy=policy.default)


class SmtpServer:
    """Enough SMTP for smtplib: EHLO/HELO, AUTH PLAIN and LOGIN (checked), MAIL, RCPT, DATA, RSET, NOOP, QUIT."""

    def __init__(self, user: str = "sitewatch@example.cn", password: str = "smtp-pass"):
        self.user, self.password = user, password
        self.mails: list[Mail] = []
        self.auth_failures = 0
        srv = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str):
                self.wfile.write((line + "\r\n").encode())
                self.wfile.flush()

            def handle(self):
                self.reply("220 localhost test SMTP")
                mail_from, rcpts, user = None, [], None
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    cmd = line.decode("utf-8", "replace").rstrip("\r\n")
                    up = cmd.upper()
                    if up.startswith(("EHLO", "HELO")):
                        self.wfile.write(b"250-localhost\r\n250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
                        self.wfile.flush()
                    elif up.startswith("AUTH PLAIN"):
                        arg = cmd.split(" ", 2)[2] if len(cmd.split(" ")) > 2 else None
                        if arg is None:
                            self.reply("334 ")
                            arg = self.rfile.readline().decode().strip()
                        _, u, p = base64.b64decode(arg).decode().split("\0")
                        user = srv._auth(self, u, p)
                    elif up.startswith("AUTH LOGIN"):
                        self.reply("334 " + base64.b64encode(b"Username:").decode())
                        u = base64.b64decode(self.rfile.readline().strip()).decode()
                        self.reply("334 " + base64.b64encode(b"Password:").decode())
                        p = base64.b64decode(self.rfile.readline().strip()).decode()
                        user = srv._auth(self, u, p)
                    elif up.startswith("MAIL FROM:"):
                        mail_from, rcpts = cmd[10:].strip().split()[0].strip("<>"), []
                        self.reply("250 OK")
                    elif up.startswith("RCPT TO:"):
                        rcpts.append(cmd[8:].strip().strip("<>"))
                        self.reply("250 OK")
                    elif up == "DATA":
                        self.reply("354 end with .")
                        buf = []
                        while True:
                            dl = self.rfile.readline()
                            if dl in (b".\r\n", b".\n", b""):
                                break
                            buf.append(dl[1:] if dl.startswith(b"..") else dl)
                        srv.mails.append(Mail(mail_from or "", rcpts, b"".join(buf), user))
                        self.reply("250 queued")
                    elif up in ("RSET", "NOOP"):
                        self.reply("250 OK")
                    elif up == "QUIT":
                        self.reply("221 bye")
                        return
                    else:
                        self.reply("502 not implemented")

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _auth(self, h, u: str, p: str) -> str | None:
        if (u, p) == (self.user, self.password):
            h.reply("235 authenticated")
            return u
        self.auth_failures += 1
        h.reply("535 authentication failed")
        return None

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
