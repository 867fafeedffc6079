"""Tencent Cloud SMS ``SendSms`` by the API 3.0 HTTP interface (no SDK), signed with TC3-HMAC-SHA256.

    CanonicalRequest = POST \\n / \\n (empty query) \\n content-type:…\\nhost:…\\n \\n content-type;host \\n SHA256hex(body)
    StringToSign     = TC3-HMAC-SHA256 \\n timestamp \\n {date}/sms/tc3_request \\n SHA256hex(CanonicalRequest)
    kDate = HMAC("TC3"+SecretKey, date); kService = HMAC(kDate, "sms"); kSigning = HMAC(kService, "tc3_request")
    Authorization    = TC3-HMAC-SHA256 Credential={SecretId}/{date}/sms/tc3_request, SignedHeaders=content-type;host,
                       Signature=hex(HMAC(kSigning, StringToSign))
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import time
from urllib.parse import urlsplit

import httpx

from alerts.channels.base import ChannelError, Rendered, pooled_client, redact
from alerts.config import Outbound

CONTENT_TYPE = "application/json; charset=utf-8"
SERVICE = "sms"
VERSION = "2021-01-11"


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def tc3_authorization(secret_id: str, secret_key: str, host: str, body: bytes, timestamp: int,
                      service: str = SERVICE) -> str:
    date = dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).strftime("%Y-%m-%d")
    canonical = "\n".join(["POST", "/", "", f"content-type:{CONTENT_TYPE}\nhost:{host.lower()}\n", "content-type;host",
                           hashlib.sha256(body).hexdigest()])
    scope = f"{date}/{service}/tc3_request"
    to_sign = "\n".join(["TC3-HMAC-SHA256", str(timestamp), scope, hashlib.sha256(canonical.encode()).hexdigest()])
    k = _hmac(_hmac(_hmac(("TC3" + secret_key).encode(), date), service), "tc3_request")
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"TC3-HMAC-SHA256 Credential={secret_id}/{scope}, SignedHeaders=content-type;host, Signature={sig}"


class TencentSmsSender:
    type = "sms"

    def __init__(self, *, endpoint: str, region: str, secret_id: str, secret_key: str, sdk_app_id: str,
                 sign_name: str, template_id: str, phone: str, params: list[str], timeout_s: float = 5.0,
                 label: str = "sms", policy: Outbound | None = None):
        self.policy = policy  # where it may send (alerts.config.Outbound); None: the default
        self.endpoint, self.region = endpoint, region
        self.secret_id, self.secret_key = secret_id, secret_key
        self.sdk_app_id, self.sign_name, self.template_id = sdk_app_id, sign_name, template_id
        self.phone = phone if phone.startswith("+") else "+86" + phone
        self.param_names, self.timeout_s, self.label = params, timeout_s, label

    def request(self, msg: Rendered, timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
        ts = int(timestamp if timestamp is not None else time.time())
        body = json.dumps({
            "PhoneNumberSet": [self.phone],
            "SmsSdkAppId": self.sdk_app_id,
            "SignName": self.sign_name,
            "TemplateId": self.template_id,
            "TemplateParamSet": [msg.params.get(k, "") for k in self.param_names],
            "SessionContext": msg.key[:512],  # our idempotency key, echoed back in status reports
        }, ensure_ascii=False, separators=(",", ":")).encode()
        host = urlsplit(self.endpoint).netloc
        headers = {
            "Authorization": tc3_authorization(self.secret_id, self.secret_key, host, body, ts),
            "Content-Type": CONTENT_TYPE,
            "Host": host,
            "X-TC-Action": "SendSms",
            "X-TC-Timestamp": str(ts),
            "X-TC-Version": VERSION,
            "X-TC-Region": self.region,
        }
        return body, headers

    async def send(self, msg: Rendered) -> None:
        body, headers = self.request(msg)
        try:
            client = pooled_client(self.endpoint, receiver=msg.receiver, label=self.label, timeout=self.timeout_s,
                                   policy=self.policy)
            resp = await client.post(self.endpoint, content=body, headers=headers)
        except httpx.HTTPError as e:
            raise ChannelError(redact(f"{type(e).__name__}: {e}", [self.secret_key])) from None
        try:
            data = resp.json().get("Response", {})
        except (ValueError, AttributeError):
            raise ChannelError(f"HTTP {resp.status_code}: non-JSON answer") from None
        if resp.status_code // 100 != 2 or "Error" in data:
            err = data.get("Error", {})
            raise ChannelError(f"HTTP {resp.status_code} {err.get('Code')}: {str(err.get('Message'))[:200]}")
        bad = [s for s in data.get("SendStatusSet", []) if s.get("Code") != "Ok"]
        if bad or not data.get("SendStatusSet"):
            raise ChannelError(f"send status {bad[0].get('Code') if bad else 'missing'}: "
                               f"{str(bad[0].get('Message') if bad else data)[:200]}")
