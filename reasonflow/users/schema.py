"""The API schema's view of our authentication: a JWT bearer scheme, so the API explorer
(/api/v1/docs/) offers Authorize and sends `Authorization: Bearer <access token>`."""

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme


class JWTAuthenticationScheme(SimpleJWTScheme):
    """Our JWTAuthentication is simplejwt's with revocation: the same header, the same token."""

    target_class = "reasonflow.users.authentication.JWTAuthentication"
