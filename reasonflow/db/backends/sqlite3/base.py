"""Django's SQLite backend, running before-commit hooks (notifications.compat)."""

from django.db.backends.sqlite3 import base

from notifications.compat import RunsHooksBeforeCommit


class DatabaseWrapper(RunsHooksBeforeCommit, base.DatabaseWrapper):
    pass
