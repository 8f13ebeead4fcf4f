"""The health check the PostgreSQL connection pool runs on each connection it hands out."""

import select


def check_connection(conn) -> None:
    """Raise when `conn` is not fit to serve a request; return quietly when it is.

    psycopg_pool's own check sends an empty query: a round trip on every request (each takes
    its connection from the pool). An idle connection's socket has nothing to read unless the
    server sent something unasked: the error it sends before it ends a session (a restart, a
    terminated backend) or the end of the stream itself. So the socket is polled, without
    waiting, and only a connection with something to read is checked the pool's way, which
    reads it and raises for a session that has ended.
    """
    from psycopg import OperationalError
    from psycopg_pool import ConnectionPool

    if conn.closed:
        raise OperationalError("the connection is closed")
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        ConnectionPool.check_connection(conn)
