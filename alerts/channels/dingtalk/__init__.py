"""DingTalk (钉钉) group robot with the signed webhook (加签): timestamp + HMAC-SHA256 sign."""

from alerts.channels.dingtalk.sender import DingtalkSender, dingtalk_sign

__all__ = ["DingtalkSender", "dingtalk_sign"]
