#!/usr/bin/env python
"""Django's command-line utility."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reasonflow.settings")
    from django.core.management import execute_from_command_line

    from reasonflow.safety import UnsafeSettings

    try:
        execute_from_command_line(sys.argv)
    except UnsafeSettings as exc:
        # An operator's mistake, not a bug: say what to set, without a traceback.
        sys.exit(f"Refusing to start: {exc}")


if __name__ == "__main__":
    main()
