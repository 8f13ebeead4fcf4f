"""reasonflow/settings.py as another environment would load it, for tests of settings."""

import importlib
import os
from types import SimpleNamespace


def settings_from_environment(**env: str) -> SimpleNamespace:
    """The settings module's values loaded with `env` over this environment (then restored)."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    import reasonflow.settings as project_settings

    try:
        return SimpleNamespace(**vars(importlib.reload(project_settings)))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        importlib.reload(project_settings)
