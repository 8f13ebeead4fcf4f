"""REST plumbing shared by every app: the exception handler that keeps tracebacks server-side."""

import logging

from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger("reasonflow.api")


def exception_handler(exc, context):
    """DRF's handler, plus a JSON 500 for anything it does not know (logged with traceback)."""
    response = drf_exception_handler(exc, context)
    if response is None:
        view = context.get("view")
        logger.exception("unhandled error in %s", type(view).__name__ if view else "API view")
        response = Response(
            {"detail": "Internal server error."}, status=status.HTTP_500_INTERNAL_SERVER_ERROR
        )
    return response
