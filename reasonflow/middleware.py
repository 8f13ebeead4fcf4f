"""Middleware of the project's own."""

from notifications import compat


class ReleaseRequestCycles:
    """First in MIDDLEWARE, so it sees the response after every other middleware: breaks the
    reference cycles Django and REST framework leave a finished request in
    (compat.release_request_cycles), so reference counting frees it instead of the cyclic
    garbage collector pausing the server."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        compat.release_request_cycles(request, response)
        return response
