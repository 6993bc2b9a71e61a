"""MQTT 3.1.1 and 5.0 for the node: packets and a sans-IO codec (no sockets, no asyncio)."""
