"""Aliyun SMS (dysmsapi 2017-05-25 SendSms) over its documented RPC HTTP API, signature HMAC-SHA1."""

from alerts.channels.aliyun_sms.sender import AliyunSmsSender, percent_encode, rpc_signature

__all__ = ["AliyunSmsSender", "percent_encode", "rpc_signature"]
