"""The console page's app: registered so its template and static files are found."""

from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "reasonflow.console"
    label = "console"
    verbose_name = "Console"
