"""WeCom (企业微信) group robot: POST markdown to the robot's webhook (key in the query string)."""

from alerts.channels.wecom.sender import WecomSender

__all__ = ["WecomSender"]
