"""Every use of a dependency's non-public API, in one place.

Each function below leans on something a dependency does not promise to keep: an attribute, a
private method, the way a coroutine steps. Each says what it assumes, and
tests/notifications/test_compat.py checks every assumption against the installed versions, so an
upgrade fails there, next to the cause, instead of far away at run time. The packages involved
are pinned in requirements.txt (asgiref, Django, channels-redis, uvicorn, websockets,
prometheus-client).

Only the standard library (and notifications.memo, which needs no more) is imported here: the
Python client (which must not import Django) uses abort_transport(), and the server-side
helpers receive the objects they work on.
"""

import asyncio
import bisect
import contextlib
import functools
import os
from collections.abc import Callable

from notifications.memo import LastResult

# --- asgiref --------------------------------------------------------------------------------


def server_event_loop() -> asyncio.AbstractEventLoop | None:
    """The ASGI server's loop when this thread runs sync code on its behalf (sync_to_async).

    Assumes asgiref's `SyncToAsync.threadlocal` carries `main_event_loop` (and its
    `main_event_loop_pid`) in the threads sync_to_async runs code in (asgiref 3.x).
    Sending from that loop reuses its channel-layer connections (and is the only way to reach
    the in-memory layer's sockets) instead of opening a new loop and connection per call.
    """
    from asgiref.sync import SyncToAsync

    local = SyncToAsync.threadlocal
    loop = getattr(local, "main_event_loop", None)
    if loop is None or getattr(local, "main_event_loop_pid", None) != os.getpid():
        return None
    return loop if loop.is_running() and not loop.is_closed() else None


# --- Django ---------------------------------------------------------------------------------


def skip_health_check(connection) -> None:
    """Skip the ping Django sends before reusing a connection (CONN_HEALTH_CHECKS).

    Assumes `BaseDatabaseWrapper.close_if_health_check_failed()` pings only while
    `health_check_done` is false (Django 4.1+); the caller retries a failed read on a new
    connection instead, which costs nothing when the connection is fine.
    """
    connection.health_check_done = True


@contextlib.contextmanager
def driver_cursor(connection, *, many_statements: bool = False):
    """A cursor of the database driver itself, past Django's CursorWrapper (a third of what
    publish_event's store statement costs the producer), binding its parameters on the server,
    its errors still raised as django.db's, on PostgreSQL (whose driver takes Django's `%s`
    placeholders). Django's own cursor elsewhere, and when something watches the queries:
    DEBUG's query log or an `execute_wrapper()`. With `many_statements`, one that binds on
    the client (as Django's does) and so sends a statement without parameters in PostgreSQL's
    simple protocol, which runs several statements sent as one.

    Assumes that after `ensure_connection()` `connection.connection` is the driver's open
    connection, and that `connection.wrap_database_errors` is the context manager Django's
    CursorWrapper uses to raise driver errors as django.db's (and to mark the connection
    unusable on the errors that make it so).
    """
    if (
        connection.vendor != "postgresql"
        or connection.queries_logged
        or connection.execute_wrappers
    ):
        with connection.cursor() as cursor:
            yield cursor
        return
    import psycopg

    connection.ensure_connection()
    # psycopg's own Cursor, not the client-binding one Django makes by default: the parameters
    # travel beside the statement (unnamed, so PgBouncer's transaction mode takes it) instead of
    # being quoted into it in Python, a tenth of the statement's cost to the producer.
    cursor_class = psycopg.ClientCursor if many_statements else psycopg.Cursor
    with connection.wrap_database_errors, cursor_class(connection.connection) as cursor:
        yield cursor


@functools.cache
def with_c_timestamp_loader(adapters):
    """Django's psycopg adapters map `adapters` (its `get_adapters_template`, for UTC), with
    timestamptz values parsed by psycopg's C loader.

    Django's loader subclasses psycopg's pure-Python one to set each value's tzinfo to the
    connection's: 2.4 µs a value against 0.12 µs in C, a tenth of the server's CPU on a page
    of 50 emails (three timestamps each). When the session's TimeZone is UTC (Django sets it
    so on every connection) the C loader's values are Django's own, tzinfo
    `datetime.timezone.utc` included, and it is called directly; on any other session time
    zone each value is moved to UTC, as Django's loader does.

    Assumes Django's `create_cursor` compares the `timezone` of the connection's timestamptz
    loader with the connection's and registers its own loader on the cursor only when they
    differ (Django 5.x), and that psycopg calls a loader's `load` as an attribute of the
    instance, so an instance's own `load` replaces the class's.
    """
    import datetime

    import psycopg
    from psycopg.adapt import AdaptersMap, Loader
    from psycopg.pq import Format

    oid = psycopg.postgres.types["timestamptz"].oid
    c_loader = psycopg.adapters.get_loader(oid, Format.TEXT)  # C when psycopg has its module

    class TimestamptzLoader(Loader):
        timezone = datetime.UTC

        def __init__(self, oid, context=None):
            super().__init__(oid, context)
            self.parse = c_loader(oid, context).load
            if self.connection and self.connection.info.parameter_status("TimeZone") == "UTC":
                self.load = self.parse

        def load(self, data):
            return self.parse(data).replace(tzinfo=self.timezone)

    faster = AdaptersMap(adapters)
    faster.register_loader("timestamptz", TimestamptzLoader)
    return faster


def in_committing_transaction(connection) -> bool:
    """True inside an atomic block whose changes commit when it exits: not in autocommit, and
    not merely inside the blocks a TestCase wraps each test in (those never commit).

    Assumes `connection.atomic_blocks` lists the open Atomic objects, outermost first, and a
    TestCase's own blocks (always the outermost) carry `_from_testcase = True` (Django 4.2+;
    Django's `durable` check reads them the same way).
    """
    blocks = connection.atomic_blocks
    return bool(blocks) and not blocks[-1]._from_testcase


def run_before_commit(connection, *, committing: bool = False) -> None:
    """Give the current transaction's on_commit hooks that have a `before_commit(connection,
    hooks)` attribute their last chance to write in it, one call per distinct `before_commit`,
    in the order each one's first hook was registered (a receipt registered after its events
    sees them stored).

    When `committing` (a real commit follows), the last `before_commit` to run, if it has a
    true `commits_with_last_statement` attribute, is called with `commit=True`: it may end its
    last statement with COMMIT, one round trip for both. The commit that follows then finds
    the transaction ended and sends nothing.

    Assumes `connection.run_on_commit` holds `(savepoint ids, hook, robust)` tuples for the
    current transaction, that `savepoint_rollback()` has already removed the hooks registered
    inside a rolled-back savepoint, and that a rollback empties it: the hooks still listed are
    exactly those that will run after the commit. Assumes psycopg's `commit()` sends nothing
    when the server reports no transaction open.
    """
    batches: dict[Callable, list] = {}
    for _, hook, _ in connection.run_on_commit:
        prepare = getattr(hook, "before_commit", None)
        if prepare is not None:
            batches.setdefault(prepare, []).append(hook)
    last = list(batches)[-1] if batches else None
    for prepare, hooks in batches.items():
        if (
            committing
            and prepare is last
            and getattr(prepare, "commits_with_last_statement", False)
        ):
            prepare(connection, hooks, commit=True)
        else:
            prepare(connection, hooks)


class RunsHooksBeforeCommit:
    """Mixin for a Django DatabaseWrapper (first base): calls run_before_commit() just before
    a transaction commits. Django has no public pre-commit hook.

    Assumes `Atomic.__exit__` commits the outermost block through `connection.commit()`
    (as `transaction.commit()` does), with `in_atomic_block` already unset so queries may run;
    and, under a TestCase, that leaving the outermost block of the test's own code (where a
    real run would commit) releases its savepoint through `connection.savepoint_commit(sid)`
    after popping it from `atomic_blocks`, leaving only the TestCase's blocks there.
    A DatabaseError raised here makes `Atomic.__exit__` roll back and re-raise, as a failed
    COMMIT would.
    """

    def commit(self):
        run_before_commit(self, committing=True)
        super().commit()

    def savepoint_commit(self, sid):
        if self.atomic_blocks and not in_committing_transaction(self):
            run_before_commit(self)
        super().savepoint_commit(sid)


def use_pool_check(pool, check: Callable) -> None:
    """Have psycopg_pool's ConnectionPool `pool` run `check` on each connection it hands out,
    in place of the check Django made it with (ConnectionPool.check_connection with
    CONN_HEALTH_CHECKS, else none, which stays none); Django takes no check of its own.

    Assumes ConnectionPool (psycopg_pool 3.3) keeps its check as `_check` and runs it on every
    connection `getconn()` hands out, closing one it raises for and taking another.
    """
    if pool._check is not None:
        pool._check = check


def column_converters(fields, connection) -> list[tuple[int, object, list[Callable]]]:
    """For each of the model `fields` that has any: (its index, its column, the functions that
    turn what the driver returned into the field's value), as the ORM applies them to each
    column it reads.

    Assumes SQLCompiler.get_converters (Django 5.2) converts a selected column `col` (a field's
    `get_col(table)`) with `connection.ops.get_db_converters(col) + col.get_db_converters(
    connection)`, each called as `convert(value, col, connection)`.
    """
    found = []
    for index, field in enumerate(fields):
        column = field.get_col(field.model._meta.db_table)
        converters = connection.ops.get_db_converters(column)
        converters += column.get_db_converters(connection)
        if converters:
            found.append((index, column, converters))
    return found


class UpdatesBySql:
    """Mixin for a model (first base): `save()` of a row that exists sends an UPDATE whose SQL
    was written once for its columns, instead of building a queryset, its filter and its
    compiler for every save (a third of a save's cost; an approval saves three rows).

    Assumes Model._save_table (Django 5.2) updates through `self._do_update(base_qs, using,
    pk_val, values, update_fields, forced_update)` with `values` as (field, None, value to
    save) for each field to write, and takes its result as "a row was updated"; that the
    UPDATE SQLUpdateCompiler writes for plain values is `UPDATE table SET col = %s, ... WHERE
    table.pk = %s` with `field.get_db_prep_save(value)` and the key's
    `get_db_prep_value(pk)` as parameters; and that the model's base manager filters nothing.
    A value that is None, an expression or a model instance, a field with a placeholder of its
    own, and `select_on_save` take Django's way.
    """

    def _do_update(self, base_qs, using, pk_val, values, update_fields, forced_update):
        if (
            not values
            or self._meta.select_on_save
            or not all(_plain_update_value(field, value) for field, _, value in values)
        ):
            return super()._do_update(base_qs, using, pk_val, values, update_fields, forced_update)
        from django.db import connections

        connection = connections[using]
        fields = tuple(field for field, _, _ in values)
        params = [field.get_db_prep_save(value, connection) for field, _, value in values]
        params.append(self._meta.pk.get_db_prep_value(pk_val, connection))
        with driver_cursor(connection) as cursor:
            cursor.execute(_update_sql(type(self), fields, connection), params)
            return cursor.rowcount > 0


def _plain_update_value(field, value) -> bool:
    return not (
        value is None
        or hasattr(value, "resolve_expression")
        or hasattr(value, "prepare_database_save")
        or hasattr(field, "get_placeholder")
    )


_UPDATES: dict[tuple, str] = {}


def _update_sql(model, fields: tuple, connection) -> str:
    key = (model, fields, connection.vendor)
    sql = _UPDATES.get(key)
    if sql is None:
        quote, meta = connection.ops.quote_name, model._meta
        table = quote(meta.db_table)
        columns = ", ".join(f"{quote(field.column)} = %s" for field in fields)
        sql = f"UPDATE {table} SET {columns} WHERE {table}.{quote(meta.pk.column)} = %s"  # noqa: S608
        _UPDATES[key] = sql
    return sql


def respond_in_one_hop(handler) -> None:
    """Have Django's ASGIHandler `handler` serve each HTTP request in one thread hop: the
    request_started signal, the middleware chain and the view, and (for a response that is
    not streamed) its close and request_finished, before it is sent.

    Django makes three hops a request: one for request_started's sync receivers, one for the
    middleware and the view, and one for response.close() after the response is sent (each
    a round trip between the event loop and the request's thread, about 0.1 ms of server CPU
    with the server on one core). Every middleware in MIDDLEWARE is Django's own
    MiddlewareMixin, which under ASGI would make one hop per process_request and
    process_response (13 a request); built as WSGI builds it (`load_middleware(is_async=False)`)
    the chain is plain sync code. A response that is not streamed holds its whole content, so
    closing it (and handing the database connection back to its pool) before it is sent
    changes nothing for the client. Django's disconnect listener is left out: a sync view
    runs to its end in its thread whatever the client does, and a response for a client that
    is gone is dropped by the server.

    Assumes ASGIHandler (Django 5.x) serves a request through `self.handle(scope, receive,
    send)` inside its ThreadSensitiveContext, and offers `read_body`, `create_request`,
    `send_response` and `chunk_size` as its own handle() uses them; that the sync
    `BaseHandler.get_response` does what the async one does (URLconf, the request's resource
    closers, logging of error responses); and that handle() sets `_handler_class` on the
    response and the ASGI chunk size on a FileResponse's `block_size`.
    """
    from asgiref.sync import sync_to_async
    from django.core import signals
    from django.core.exceptions import RequestAborted
    from django.core.handlers.asgi import get_script_prefix
    from django.http import FileResponse
    from django.urls import set_script_prefix

    handler.load_middleware(is_async=False)

    def respond(scope, body_file):
        signals.request_started.send(sender=handler.__class__, scope=scope)
        request, response = handler.create_request(scope, body_file)
        if request is not None:
            response = handler.get_response(request)
            response._handler_class = handler.__class__
            if isinstance(response, FileResponse):
                response.block_size = handler.chunk_size
        if not response.streaming:
            response.close()
        return response

    async def handle(scope, receive, send):
        try:
            body_file = await handler.read_body(receive)
        except RequestAborted:
            return
        try:
            set_script_prefix(get_script_prefix(scope))
            response = await sync_to_async(respond, thread_sensitive=True)(scope, body_file)
            await handler.send_response(response, send)
            if response.streaming:
                await sync_to_async(response.close, thread_sensitive=True)()
        finally:
            body_file.close()

    handler.handle = handle


def release_request_cycles(request, response) -> None:
    """Break the reference cycles that a finished request and its response are held in, so
    reference counting frees them (with the page of rows they rendered) at once.

    Under REST load the cyclic collector ran every 0.2-0.3 s, each run finding 13,000-17,000
    objects that requests had left in cycles and pausing the server 8-36 ms (gen1 runs: up to
    140 ms).

    Assumes Django REST framework's cycles: the Response's `renderer_context` holds the view,
    the request and the response itself; the view holds `request` and `response`; the
    Request's `parser_context` holds the Request and the view; a serializer's `data`
    (ReturnList/ReturnDict) points back at the serializer that caches it, whose bound fields
    point back at it too. And Django's: the AuthenticationMiddleware's `user` (a lazy object)
    and `auser` (a partial) close over the request; the MessageMiddleware's storage
    (`_messages`) holds the request. Nothing reads them once every middleware has seen the
    response.
    """
    context = getattr(response, "renderer_context", None)
    if context:
        response.renderer_context = None
        view, drf_request = context.get("view"), context.get("request")
        if view is not None:
            vars(view).clear()
        if drf_request is not None:
            drf_request.parser_context = None
    data = getattr(response, "data", None)
    # A serializer's data, or a page of it under the paginator's keys.
    for rendered in (data, *(data.values() if isinstance(data, dict) else ())):
        serializer = getattr(rendered, "serializer", None)
        if serializer is not None:
            rendered.serializer = None
            _release_serializer(serializer)
    for name in ("user", "auser", "_messages"):
        request.__dict__.pop(name, None)


def _release_serializer(serializer) -> None:
    """A serializer and its bound fields point at each other (a field's `parent`, the fields'
    BindingDict's `serializer`, a list serializer's `child`), and it caches what it read and
    rendered (`instance`, `_data`): empty it, and every nested serializer first."""
    state = vars(serializer)
    nested = [state.get("child"), *state.get("fields", {}).values()]
    for inner in nested:
        inner_state = getattr(inner, "__dict__", None)
        if inner_state and ("child" in inner_state or "fields" in inner_state):
            _release_serializer(inner)
    state.clear()


# --- channels-redis -------------------------------------------------------------------------


def use_loop_layer(layer_class: type, make: Callable) -> None:
    """Have `layer_class` (a RedisPubSubChannelLayer) make its per-loop layers with `make`.

    Assumes channels-redis 4.x's pub/sub layer reaches its loop layer only through
    `_get_layer()`, keeps them in `_layers` by loop, builds them from `_args`/`_kwargs` plus
    `channel_layer=`, and closes them via `channels_redis.utils._wrap_close(layer, loop)`.
    """
    from channels_redis.utils import _wrap_close

    def _get_layer(self):
        loop = asyncio.get_running_loop()
        layer = self._layers.get(loop)
        if layer is None:
            layer = self._layers[loop] = make(*self._args, **self._kwargs, channel_layer=self)
            _wrap_close(self, loop)
        return layer

    layer_class._get_layer = _get_layer


def detached_loop_layer(layer, make: Callable):
    """A loop layer of the pub/sub layer `layer` that belongs to no event loop, made as
    use_loop_layer's `make` makes them: for the shards and Redis channel names a send from a
    thread without a loop must use (it opens no connection).

    Assumes the same `_args`/`_kwargs` as use_loop_layer.
    """
    return make(*layer._args, **layer._kwargs, channel_layer=layer)


def loop_layer(layer):
    """The running loop's layer of a pub/sub layer (made on first use).

    Assumes RedisPubSubChannelLayer's `_get_layer()` (see use_loop_layer).
    """
    return layer._get_layer()


def replace_shards(loop_layer, make_shard: Callable) -> None:
    """Rebuild a loop layer's shard connections with `make_shard(host, loop_layer)`.

    Assumes RedisPubSubLoopLayer keeps its RedisSingleShardConnection objects in `_shards`
    (each with its `host`), made in `__init__` before any connection is opened.
    """
    loop_layer._shards = [make_shard(shard.host, loop_layer) for shard in loop_layer._shards]


def shard_for_group(loop_layer, group: str) -> tuple[object, str]:
    """(the shard connection, the Redis channel name) a group's messages are published on.

    Assumes RedisPubSubLoopLayer's `_get_group_channel_name(group)` and `_get_shard(name)`.
    """
    name = loop_layer._get_group_channel_name(group)
    return loop_layer._get_shard(name), name


def subscribed(shard) -> set[str]:
    """The Redis channels a shard connection has sent SUBSCRIBE for (and not UNSUBSCRIBE).

    Assumes RedisSingleShardConnection keeps them in `_subscribed_to`, adding a channel once
    its SUBSCRIBE is sent and removing it once its UNSUBSCRIBE is.
    """
    return shard._subscribed_to


async def subscribe_many(shard, channels: list[str]) -> None:
    """Subscribe a shard connection to each of `channels` not subscribed yet, with one
    SUBSCRIBE command for all of them (its own subscribe() sends one per channel).

    Assumes RedisSingleShardConnection.subscribe()'s own steps: under `_lock`,
    `_ensure_redis()` and `_ensure_receiver()`, then redis-py's `_pubsub.subscribe(*names)`
    (one command, returning once it is sent), then `_subscribed_to` updated.
    """
    async with shard._lock:
        new = [
            channel for channel in dict.fromkeys(channels) if channel not in shard._subscribed_to
        ]
        if new:
            shard._ensure_redis()
            shard._ensure_receiver()
            await shard._pubsub.subscribe(*new)
            shard._subscribed_to.update(new)


def use_message_handler(shard_class: type, handle: Callable) -> None:
    """Have `shard_class` (a RedisSingleShardConnection) pass each pub/sub message (or None)
    to `handle(shard, message)`.

    Assumes the shard's reader calls `self._receive_message(message)` for every message it
    gets from Redis, with None when there was none.
    """
    shard_class._receive_message = handle


# --- prometheus-client ----------------------------------------------------------------------


def observe_each(histogram, amounts: list[float]) -> None:
    """`histogram.observe(amount)` for each amount, adding each bucket's count once.

    Assumes prometheus-client's Histogram (0.26) keeps `_upper_bounds` (ascending, +Inf
    last), a value per bound in `_buckets` (not cumulative: observe() adds 1 to the first
    bucket whose bound is at or above the amount) and `_sum`, each value with inc(amount)
    (in-process and multiprocess alike), and checks `_raise_if_not_observable()` first.
    """
    if not amounts:
        return
    histogram._raise_if_not_observable()
    bounds = histogram._upper_bounds
    counts = [0] * len(bounds)
    for amount in amounts:
        counts[bisect.bisect_left(bounds, amount)] += 1
    histogram._sum.inc(sum(amounts))
    for value, count in zip(histogram._buckets, counts, strict=True):
        if count:
            value.inc(count)


# --- websockets -----------------------------------------------------------------------------


def abort_transport(ws) -> None:
    """Drop a client connection at once, without a closing handshake (a dead peer).

    Assumes websockets' asyncio ClientConnection exposes its asyncio `transport`; recv() then
    fails with ConnectionClosed.
    """
    ws.transport.abort()


# --- uvicorn --------------------------------------------------------------------------------


@functools.cache
def lean_websocket_protocol(sans_io_protocol: type) -> type:
    """uvicorn's sans-I/O WebSocket protocol (the class, passed in: the publish seam imports
    this module and must not import the server) with a lighter inbox and `writable` flag.

    An idle authenticated socket's Python memory was a quarter deques: the protocol's
    asyncio.Queue holds four (its items, getters, putters and an Event's waiters) and its
    `writable` Event one, about 3.8 KiB a socket, each allocating a block of 64 slots whether
    or not anything ever waits. Inbox and Flag keep a list, and waiters only while someone
    waits. The handshake's response (about 1 KiB with its headers) is let go once sent.

    Assumes WebSocketsSansIOProtocol.__init__ creates `queue` and `writable` before any other
    method runs, that the protocol uses nothing of them beyond what Inbox and Flag offer
    (put_nowait/get/empty; set/clear/is_set/wait), and that it reads `response` only until
    the handshake is complete.
    """

    class LeanWebSocketsProtocol(sans_io_protocol):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.queue = Inbox()
            self.writable = Flag(self.writable.is_set())

        async def send(self, message) -> None:
            await super().send(message)
            if self.response is not None and self.handshake_complete:
                self.response = None  # the 101 and its headers, sent

    return LeanWebSocketsProtocol


@functools.cache
def lean_http_protocol(httptools_protocol: type) -> type:
    """uvicorn's httptools HTTP protocol, letting go of its parser once a connection is
    upgraded to a WebSocket.

    The parser holds the protocol's bound methods as its callbacks, a reference cycle: each
    upgraded connection left its HTTP protocol, parser, flow control and their deques (about
    20 objects, 4.5 KiB) for the cyclic garbage collector to find. Without the parser,
    reference counting frees them at once.

    Assumes HttpToolsProtocol.handle_websocket_upgrade hands the transport to the WebSocket
    protocol and is the protocol's last use of `parser` (data_received returns after it).
    """

    class LeanHttpToolsProtocol(httptools_protocol):
        def handle_websocket_upgrade(self) -> None:
            super().handle_websocket_upgrade()
            self.parser = None

    return LeanHttpToolsProtocol


class _Waiters:
    """Futures of the tasks waiting for something, a list only while there are any."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future] | None = None

    async def _wait(self) -> None:
        future = asyncio.get_running_loop().create_future()
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = []
        waiters.append(future)
        try:
            await future
        finally:
            if self._waiters is waiters and future in waiters:  # cancelled before a wake
                waiters.remove(future)
                if not waiters:
                    self._waiters = None

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, None
        for future in waiters or ():
            if not future.done():
                future.set_result(None)


class Inbox(_Waiters):
    """What uvicorn's protocol uses of asyncio.Queue: put_nowait, get and empty. An item
    stays in the inbox until a running get() takes it, so a cancelled get() loses nothing."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        super().__init__()
        self._items: list = []

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item) -> None:
        self._items.append(item)
        self._wake()

    async def get(self):
        while not self._items:
            await self._wait()
        return self._items.pop(0)


class Flag(_Waiters):
    """What uvicorn's protocol uses of asyncio.Event, with its semantics: wait() returns once
    the flag was set after it began, even if it was cleared again since."""

    __slots__ = ("_value",)

    def __init__(self, value: bool = False) -> None:
        super().__init__()
        self._value = value

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if not self._value:
            self._value = True
            self._wake()

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if not self._value:
            await self._wait()
        return True


def text_frame_writer(send) -> Callable[[str], bool] | None:
    """For the ASGI `send` uvicorn gave an accepted WebSocket connection, a function that
    writes a text as one frame straight to its socket and says True, or says False when the
    frame must take the ordinary way (the connection is closing, the client is not reading).
    None when `send` is not uvicorn's sans-I/O protocol, or an extension is in use.

    A fan-out writes one event to thousands of sockets in one pass: the ASGI message, the
    send coroutine and websockets' frame building were a third of each delivery's cost. The
    frame is built once per text (the members of a group share the message's string).

    Assumes uvicorn's WebSocketsSansIOProtocol passes its bound `send` to the app and keeps
    `handshake_complete`, `close_sent`, `disconnected`, `writable` (set while the transport
    takes writes), `transport` and `conn` (websockets' ServerProtocol, whose `state`,
    `extensions`, `expect_continuation_frame` and `writes` hold what its send_text checks and
    buffers, and which uvicorn flushes after every call); and RFC 6455's frame layout, which
    websockets' Frame.serialize writes for a server (no mask).
    """
    protocol = getattr(send, "__self__", None)
    if not _is_uvicorns(protocol, "WebSocketsSansIOProtocol") or not protocol.handshake_complete:
        return None
    conn, transport, writable = protocol.conn, protocol.transport, protocol.writable
    open_state = conn.state  # websockets' State.OPEN once accepted (no import of websockets)
    if open_state.name != "OPEN" or conn.extensions:
        return None

    def write(text: str) -> bool:
        if (
            protocol.close_sent
            or protocol.disconnected
            or not writable.is_set()
            or conn.state is not open_state
            or conn.expect_continuation_frame
            or conn.writes
            or transport.is_closing()
        ):
            return False
        transport.write(_text_frame(text))
        return True

    return write


def _is_uvicorns(instance, class_name: str) -> bool:
    """Whether `instance` is of uvicorn's class `class_name` (or a subclass, such as serve's
    lean protocols), told without importing uvicorn."""
    return any(
        cls.__name__ == class_name and cls.__module__.startswith("uvicorn.")
        for cls in type(instance).__mro__
    )


def _frame_of(text: str) -> bytes:
    payload = text.encode()
    length = len(payload)
    if length < 126:
        head = bytes((0x81, length))
    elif length < 65536:
        head = bytes((0x81, 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((0x81, 127)) + length.to_bytes(8, "big")
    return head + payload


def _chunk_of(text: str) -> bytes:
    body = text.encode()
    return b"%x\r\n%b\r\n" % (len(body), body)


# A group message's members share its text: the fan-out encodes it once.
_text_frame = LastResult(_frame_of)
_chunk = LastResult(_chunk_of)


def chunk_writer(send) -> Callable[[str], bool] | None:
    """For the ASGI `send` uvicorn gave a streaming HTTP response whose headers are sent, a
    function that writes a text as one chunk straight to its socket and says True, or says
    False when the chunk must take the ordinary way (the response is complete, the client is
    gone or not reading). None when `send` is not uvicorn's httptools response, or uvicorn does
    not send this response in chunks (a HEAD request, a Content-Length).

    text_frame_writer's counterpart for the event stream: the ASGI message, the send
    coroutine and the chunk's framing were most of what an SSE delivery cost beyond the
    socket's. The chunk is built once per text (the members of a group share its string).

    Assumes uvicorn's httptools RequestResponseCycle passes its bound `send` to the app, keeps
    `scope`, `response_started`, `response_complete`, `disconnected`, `chunked_encoding`,
    `flow` (its FlowControl, whose `write_paused` is set while the transport's buffer is
    full) and `transport`, and writes a body as a chunk: its length in hex, CRLF, the body,
    CRLF.
    """
    cycle = getattr(send, "__self__", None)
    if (
        not _is_uvicorns(cycle, "RequestResponseCycle")
        or not cycle.response_started
        or cycle.chunked_encoding is not True
        or cycle.scope["method"] == "HEAD"
    ):
        return None
    transport, flow = cycle.transport, cycle.flow

    def write(text: str) -> bool:
        if (
            cycle.response_complete
            or cycle.disconnected
            or flow.write_paused
            or transport.is_closing()
        ):
            return False
        if text:  # an empty chunk would end the response
            transport.write(_chunk(text))
        return True

    return write


# --- coroutines stepped by hand ---------------------------------------------------------------


def acquired_at_once(lock: asyncio.Lock) -> bool:
    """Take `lock` if that needs no waiting.

    Assumes asyncio.Lock.acquire() of a free lock returns on its first step (no yield), so
    stepping it with send(None) takes the lock without a task.
    """
    if lock.locked():
        return False
    acquiring = lock.acquire()
    try:
        acquiring.send(None)
    except StopIteration:
        return True
    acquiring.close()  # another task is queued for it
    return False


def run_until_blocked(coroutine):
    """Run `coroutine` by hand up to its first wait: None when it finished without one, else
    a Resumed awaitable that finishes it (for a task to await). Its exceptions propagate.

    Assumes a coroutine that needs no waiting finishes on its first send(None) (the ASGI
    server's send of a frame whose transport buffer has room).
    """
    try:
        blocked_on = coroutine.send(None)
    except StopIteration:
        return None
    return Resumed(coroutine, blocked_on)


class Resumed:
    """An awaitable that finishes a coroutine started by hand, from where it stopped
    (`blocked_on`, what its first step yielded): `yield from` written out, so a task can
    take the coroutine over with cancellation (the send timeout) passed through.

    Assumes the coroutine protocol (send/throw/close, StopIteration carrying the result) and
    that the event loop accepts the future the coroutine yielded, re-yielded from here.
    """

    def __init__(self, coroutine, blocked_on) -> None:
        self.coroutine = coroutine
        self.blocked_on = blocked_on

    def __await__(self):
        coroutine, pending = self.coroutine, self.blocked_on
        while True:
            try:
                value = yield pending
            except GeneratorExit:
                coroutine.close()
                raise
            except BaseException as exc:
                try:
                    pending = coroutine.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    pending = coroutine.send(value)
                except StopIteration as done:
                    return done.value
