"""Clients of the WebSocket contract: python.py (asyncio) and js/client.js (browsers, Node)."""
