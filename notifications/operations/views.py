"""The operators' probes: /healthz (up), /readyz (database and channel layer answer) and
/metrics (Prometheus, for allowed scrapers only)."""

from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache

from notifications.operations.health import readiness_check
from notifications.operations.metrics import metrics_access_allowed, render_metrics


@never_cache
def healthz(request):
    """The process is up and serving requests; nothing else is checked."""
    return JsonResponse({"status": "ok"})


@never_cache
async def readyz(request):
    """200 when the database and the channel layer both answer, else 503; with latencies."""
    checks = await readiness_check()
    ready = all(check.ok for check in checks.values())
    return JsonResponse(
        {
            "status": "ok" if ready else "unavailable",
            "checks": {name: check.as_dict() for name, check in checks.items()},
        },
        status=200 if ready else 503,
    )


@never_cache
def metrics(request):
    """Prometheus text format, for METRICS_TOKEN bearers and METRICS_ALLOWED_IPS only."""
    if not metrics_access_allowed(
        remote_addr=request.META.get("REMOTE_ADDR"),
        authorization=request.META.get("HTTP_AUTHORIZATION"),
    ):
        return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
    body, content_type = render_metrics()
    return HttpResponse(body, content_type=content_type)
