"""Django's PostgreSQL backend, running before-commit hooks and reading timestamps in C
(notifications.compat)."""

import datetime

from django.db.backends.postgresql import base

from notifications.compat import RunsHooksBeforeCommit, with_c_timestamp_loader


class DatabaseWrapper(RunsHooksBeforeCommit, base.DatabaseWrapper):
    def get_connection_params(self):
        params = super().get_connection_params()
        if "context" in params and self.timezone is datetime.UTC:
            params["context"] = with_c_timestamp_loader(params["context"])
        return params
