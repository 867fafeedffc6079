"""Channels, one folder each; ``build_sender`` turns a receiver's channel config into a sender.

Secrets are resolved here, at send time, from the environment or the secrets file (see ``alerts.config``):
a missing secret fails that channel (and the notifier falls over to the receiver's next one); its value is
never logged.
"""

from __future__ import annotations

from alerts.channels.base import ChannelError, Rendered, Sender, redact
from alerts.config import AlertsConfig


def build_sender(cfg: AlertsConfig, ch) -> Sender:
    label = ch.label
    if ch.type == "webhook":
        from alerts.channels.webhook import WebhookSender

        return WebhookSender(ch.url, cfg.secret(ch.secret), ch.timeout, label=label, policy=cfg.outbound)
    if ch.type == "wecom":
        from alerts.channels.wecom import WecomSender

        return WecomSender(endpoint=ch.endpoint, key=cfg.secret(ch.key), mentioned_mobiles=ch.mentioned_mobiles,
                           timeout_s=ch.timeout, label=label, policy=cfg.outbound)
    if ch.type == "dingtalk":
        from alerts.channels.dingtalk import DingtalkSender

        return DingtalkSender(endpoint=ch.endpoint, access_token=cfg.secret(ch.access_token),
                              secret=cfg.secret(ch.secret), at_mobiles=ch.at_mobiles, timeout_s=ch.timeout,
                              label=label, policy=cfg.outbound)
    if ch.type == "email":
        from alerts.channels.email import EmailSender

        p = cfg.providers[ch.provider]
        return EmailSender(host=p.host, port=p.port, security=p.security, username=p.username,
                           password=cfg.secret(p.password), sender=p.sender, to=list(ch.to), timeout_s=p.timeout,
                           label=label)
    if ch.type == "sms":
        p = cfg.providers[ch.provider]
        if p.type == "aliyun_sms":
            from alerts.channels.aliyun_sms import AliyunSmsSender

            return AliyunSmsSender(endpoint=p.endpoint, region=p.region,
                                   access_key_id=cfg.secret(p.access_key_id),
                                   access_key_secret=cfg.secret(p.access_key_secret), sign_name=p.sign_name,
                                   template_code=p.template_code, phone=ch.phone, params=p.params,
                                   timeout_s=p.timeout, label=label, policy=cfg.outbound)
        from alerts.channels.tencent_sms import TencentSmsSender

        return TencentSmsSender(endpoint=p.endpoint, region=p.region, secret_id=cfg.secret(p.secret_id),
                                secret_key=cfg.secret(p.secret_key), sdk_app_id=p.sdk_app_id, sign_name=p.sign_name,
                                template_id=p.template_id, phone=ch.phone, params=p.params, timeout_s=p.timeout,
                                label=label, policy=cfg.outbound)
    raise ValueError(f"unknown channel type {ch.type!r}")


__all__ = ["build_sender", "ChannelError", "Rendered", "Sender", "redact"]
