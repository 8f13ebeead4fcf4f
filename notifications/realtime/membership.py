"""LayerMembership: one socket's place on the channel layer.

Its channel, its user's group, and how the layer's messages reach the socket: with the pub/sub
layer, a callback per message (no task while the socket is idle; the next event of an idle
socket is written right there, see EventStream.forward_at_once), with other layers one reader
task. Messages are handed to the socket's dispatch() one at a time, in arrival order.
"""

import asyncio
import logging

from notifications.realtime.waiters import cancel_until_done

logger = logging.getLogger(__name__)

# Stands in for a channel-layer message when the layer itself fails; compared by identity, so
# nothing sent through the layer can impersonate it.
LAYER_LOST = {"type": "layer.lost"}


class LayerMembership:
    def __init__(self, socket) -> None:
        # `socket` has closing, stream, dispatch(message) and handle(awaitable).
        self.socket = socket
        self.layer = None
        self.group: str | None = None
        self.channel_name: str | None = None
        self.lost = False  # the layer failed: its groups cannot be trusted any more
        self._inbox: list[dict] = []
        self._task: asyncio.Task | None = None

    async def join(self, layer, group: str) -> None:
        """Open this socket's channel and add it to `group`."""
        self.layer, self.group = layer, group
        local = hasattr(layer, "new_local_channel")
        if local:
            self.channel_name = layer.new_local_channel(self._on_message)
        else:
            self.channel_name = await layer.new_channel()
        await layer.group_add(group, self.channel_name)
        if not local:
            self._task = asyncio.get_running_loop().create_task(self._read())

    async def rejoin(self) -> None:
        """Refresh the group membership before group_expiry drops it."""
        if self.group is not None and self.channel_name is not None:
            await self.layer.group_add(self.group, self.channel_name)

    async def discard(self) -> None:
        """Leave the group (the socket is closing), once; never fails. A caller cancelled
        meanwhile (a stopping server) does not stop it: the member would stay until
        group_expiry, taking the user's events."""
        if self.channel_name is None or self.group is None or self.lost:
            return
        group, self.group = self.group, None
        await asyncio.shield(self._discard(group))

    async def _discard(self, group: str) -> None:
        try:
            await self.layer.group_discard(group, self.channel_name)
        except Exception:
            # Membership expires on its own (group_expiry); never fail a disconnect.
            logger.warning("group_discard failed for %s", group, exc_info=True)

    async def leave(self) -> None:
        """Close the channel and stop forwarding (the socket is gone)."""
        if self.channel_name is not None and hasattr(self.layer, "discard_local_channel"):
            self.layer.discard_local_channel(self.channel_name)
        task = self._task
        if task is not None:
            # Until it has ended, even when the caller is cancelled meanwhile (a client that
            # went away mid-close): a reader left waiting on the core layer would hold a
            # blocking Redis pop for good. Its outcome is not ours.
            await asyncio.shield(cancel_until_done(task))

    def _on_message(self, message: dict) -> None:
        # Called by the layer for each message of this channel. The next event of an idle
        # socket is written right here; anything else goes to one task that forwards the
        # burst in arrival order.
        if self.socket.closing:
            return
        if self._task is None:
            sent = self.socket.stream.forward_at_once(message)
            if sent is True:
                return
            if sent is not False:  # the client is slow to read: a task finishes the send
                self._task = asyncio.get_running_loop().create_task(self._forward(sent))
                return
        self._inbox.append(message)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._forward())

    async def _forward(self, unfinished=None) -> None:
        try:
            if unfinished is not None:
                await self.socket.handle(unfinished)
            while self._inbox:
                await self.socket.dispatch(self._inbox.pop(0))
        finally:
            self._task = None

    async def _read(self) -> None:
        while not self.socket.closing:
            try:
                message = await self.layer.receive(self.channel_name)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("channel layer receive failed (%s)", self.group, exc_info=True)
                self.lost = True
                await self.socket.dispatch(LAYER_LOST)
                return
            await self.socket.dispatch(message)
