"""Aliyun SMS ``SendSms`` by the RPC-style API (no SDK).

Signature (Aliyun "RPC signature", SignatureVersion 1.0): sort every parameter except ``Signature`` by name,
percent-encode names and values (RFC 3986: ``A-Z a-z 0-9 - _ . ~`` kept, space as %20), join as
``k=v&k=v``; ``StringToSign = METHOD & percentEncode("/") & percentEncode(canonicalized)``;
``Signature = base64(HMAC-SHA1(AccessKeySecret + "&", StringToSign))``. We POST the parameters as a form.
The endpoint is configurable (tests point it at a local receiver that recomputes the signature).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import uuid
from urllib.parse import quote

import httpx

from alerts.channels.base import ChannelError, Rendered, pooled_client, redact
from alerts.config import Outbound


def percent_encode(s: str) -> str:
    return quote(str(s), safe="-_.~")


def rpc_signature(params: dict[str, str], secret: str, method: str = "POST") -> str:
    canon = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items()) if k != "Signature")
    to_sign = f"{method}&{percent_encode('/')}&{percent_encode(canon)}"
    return base64.b64encode(hmac.new((secret + "&").encode(), to_sign.encode(), hashlib.sha1).digest()).decode()


class AliyunSmsSender:
    type = "sms"

    def __init__(self, *, endpoint: str, region: str, access_key_id: str, access_key_secret: str, sign_name: str,
                 template_code: str, phone: str, params: list[str], timeout_s: float = 5.0, label: str = "sms",
                 policy: Outbound | None = None):
        self.policy = policy  # where it may send (alerts.config.Outbound); None: the default
        self.endpoint, self.region = endpoint, region
        self.access_key_id, self.access_key_secret = access_key_id, access_key_secret
        self.sign_name, self.template_code, self.phone = sign_name, template_code, phone
        self.param_names, self.timeout_s, self.label = params, timeout_s, label

    def request_params(self, msg: Rendered, now: dt.datetime | None = None, nonce: str | None = None) -> dict[str, str]:
        now = now or dt.datetime.now(dt.timezone.utc)
        p = {
            "AccessKeyId": self.access_key_id,
            "Action": "SendSms",
            "Format": "JSON",
            "OutId": msg.key[:64],  # our idempotency key travels with the message (Aliyun's "外部流水号")
            "PhoneNumbers": self.phone.removeprefix("+86"),
            "RegionId": self.region,
            "SignName": self.sign_name,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": nonce or uuid.uuid4().hex,
            "SignatureVersion": "1.0",
            "TemplateCode": self.template_code,
            "TemplateParam": json.dumps({k: msg.params.get(k, "") for k in self.param_names}, ensure_ascii=False,
                                        separators=(",", ":")),
            "Timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Version": "2017-05-25",
        }
        p["Signature"] = rpc_signature(p, self.access_key_secret, "POST")
        return p

    async def send(self, msg: Rendered) -> None:
        params = self.request_params(msg)
        try:
            client = pooled_client(self.endpoint, receiver=msg.receiver, label=self.label, timeout=self.timeout_s,
                                   policy=self.policy)
            resp = await client.post(self.endpoint, data=params)
        except httpx.HTTPError as e:
            raise ChannelError(redact(f"{type(e).__name__}: {e}", [self.access_key_secret])) from None
        try:
            data = resp.json()
        except ValueError:
            raise ChannelError(f"HTTP {resp.status_code}: non-JSON answer") from None
        if resp.status_code // 100 != 2 or data.get("Code") != "OK":
            raise ChannelError(redact(f"HTTP {resp.status_code} Code={data.get('Code')!r} "
                                      f"Message={str(data.get('Message'))[:200]!r}", [self.access_key_secret]))
