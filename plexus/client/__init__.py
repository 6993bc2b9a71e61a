"""The asyncio SDK: `Client`, `Event`, `Subscription`, `Consumer`, `Delivery`."""

from plexus.client.client import MAX_PAYLOAD_BYTES, Client
from plexus.client.consumer import Consumer, Delivery
from plexus.client.event import Event
from plexus.client.info import ClientInfo, NodeInfo, QueueInfo, SubscriptionInfo, SubscriptionsView
from plexus.client.subscription import Subscription

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "Client",
    "ClientInfo",
    "Consumer",
    "Delivery",
    "Event",
    "NodeInfo",
    "QueueInfo",
    "Subscription",
    "SubscriptionInfo",
    "SubscriptionsView",
]
