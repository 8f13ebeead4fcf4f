"""Clients of the WebSocket contract, python.py (asyncio) and js/client.js (browsers, Node), and
publisher.py, the publish API for other Python services."""
