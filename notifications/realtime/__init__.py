"""The runtime that serves sockets: consumer, stream, channel layers, registry, presence, server."""
