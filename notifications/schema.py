"""The API schema's view of the publish API's authentication: a bearer scheme of its own, so
the API explorer asks for a service key there, not a user's access token."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ServiceKeyScheme(OpenApiAuthenticationExtension):
    target_class = "notifications.service_keys.ServiceKeyAuthentication"
    name = "serviceKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "rfk_ service key",
            "description": (
                "A service key (`rfk_...`) from `manage.py create_service_key` or the admin; "
                "not a user's access token."
            ),
        }
