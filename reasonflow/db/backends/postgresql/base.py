"""Django's PostgreSQL backend, running before-commit hooks, reading timestamps in C
(notifications.compat) and checking pooled connections without a round trip."""

import datetime

from django.db.backends.postgresql import base

from notifications.compat import RunsHooksBeforeCommit, use_pool_check, with_c_timestamp_loader
from reasonflow.db.pool import check_connection


class DatabaseWrapper(RunsHooksBeforeCommit, base.DatabaseWrapper):
    def get_connection_params(self):
        params = super().get_connection_params()
        if "context" in params and self.timezone is datetime.UTC:
            params["context"] = with_c_timestamp_loader(params["context"])
        return params

    @property
    def pool(self):
        pool = super().pool
        if pool is not None:
            use_pool_check(pool, check_connection)
        return pool
