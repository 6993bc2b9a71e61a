"""The node's HTTP front door: publish with POST, stream with server-sent events or a
WebSocket, through the same Gateway (node/gateway.py) as MQTT; docs/http.md is its API."""

from node.http_api.server import HttpFrontDoor

__all__ = ["HttpFrontDoor"]
