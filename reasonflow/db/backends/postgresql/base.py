"""Django's PostgreSQL backend, running before-commit hooks (notifications.compat)."""

from django.db.backends.postgresql import base

from notifications.compat import RunsHooksBeforeCommit


class DatabaseWrapper(RunsHooksBeforeCommit, base.DatabaseWrapper):
    pass
