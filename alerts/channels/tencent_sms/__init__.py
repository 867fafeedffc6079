"""Tencent Cloud SMS (API 2021-01-11 SendSms) over its documented HTTP API, signature TC3-HMAC-SHA256."""

from alerts.channels.tencent_sms.sender import TencentSmsSender, tc3_authorization

__all__ = ["TencentSmsSender", "tc3_authorization"]
