"""The notification console at `/`: a page that logs in over REST, connects with the JavaScript
client (static/notifications/client.js) and shows the live event stream of its user."""

from django.conf import settings
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.views.decorators.http import require_GET, require_safe

from reasonflow.users.services import DEMO_EMAIL


@require_GET
def console(request):
    """Render the console; everything after that happens in the browser over REST and WS.
    The one-click demo sign-in is offered in development (DEBUG) only; no password is shown."""
    return render(
        request,
        "console/console.html",
        {"demo_email": DEMO_EMAIL if settings.DEBUG else None},
    )


@require_safe
def favicon(request):
    """/favicon.ico, which browsers fetch for pages without an icon link (the admin's, the API
    docs'): the console's icon, wherever the static files are served from."""
    return redirect(static("notifications/favicon.ico"))
