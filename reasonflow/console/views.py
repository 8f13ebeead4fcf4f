"""The notification console at `/`: a page that logs in over REST, connects with the JavaScript
client (static/notifications/client.js) and shows the live event stream of its user."""

from django.conf import settings
from django.shortcuts import render
from django.views.decorators.http import require_GET

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
