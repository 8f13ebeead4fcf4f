"""System checks (`manage.py check`): settings that work in development, fail in production."""

from django.conf import settings
from django.core.checks import Tags, Warning, register

# channels-redis's own default when CONFIG has no group_expiry.
CHANNELS_REDIS_GROUP_EXPIRY = 86400


@register(Tags.compatibility)
def check_channel_layer(app_configs, **kwargs) -> list[Warning]:
    """The in-memory layer in production, and a group_expiry that drops live sockets."""
    layer = settings.CHANNEL_LAYERS.get("default", {})
    backend = layer.get("BACKEND", "")
    warnings = []
    if backend == "channels.layers.InMemoryChannelLayer" and not settings.DEBUG:
        warnings.append(
            Warning(
                "The in-memory channel layer is used with DEBUG=False.",
                hint="Set REDIS_URL: with the in-memory layer, events published by other "
                "processes (workers, management commands, other server processes) reach live "
                "sockets only through the delivery watch, one to two "
                "NOTIFICATIONS_CATCHUP_INTERVAL ticks later, and revocations likewise.",
                id="notifications.W001",
            )
        )
    if "redis" in backend.lower():
        expiry = layer.get("CONFIG", {}).get("group_expiry", CHANNELS_REDIS_GROUP_EXPIRY)
        refresh = settings.NOTIFICATIONS_GROUP_REFRESH
        # Sockets re-join their group every `refresh` seconds; one late or failed refresh
        # must not let Redis drop a live socket from its group (it would miss live events).
        if expiry < 2 * refresh:
            warnings.append(
                Warning(
                    f"Channel layer group_expiry ({expiry} s) is shorter than twice "
                    f"NOTIFICATIONS_GROUP_REFRESH ({refresh:g} s).",
                    hint="Live sockets would drop out of their group between refreshes. Raise "
                    "CHANNEL_LAYER_GROUP_EXPIRY or lower NOTIFICATIONS_GROUP_REFRESH.",
                    id="notifications.W002",
                )
            )
    return warnings


@register(Tags.database)
def check_database_pool(app_configs, **kwargs) -> list[Warning]:
    """A pool the realtime reads would fill: each read thread keeps one connection."""
    pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool")
    if not pool:
        return []
    threads = settings.NOTIFICATIONS_READ_THREADS
    if pool.get("max_size", threads + 1) > threads:
        return []
    return [
        Warning(
            f"DATABASE_POOL_MAX_SIZE ({pool['max_size']}) leaves no connection for requests: "
            f"the realtime reads' {threads} threads (NOTIFICATIONS_READ_THREADS) keep one each.",
            hint="Raise DATABASE_POOL_MAX_SIZE above NOTIFICATIONS_READ_THREADS, by as many "
            "requests as a process serves at once.",
            id="notifications.W003",
        )
    ]
