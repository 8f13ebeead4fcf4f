"""The OpenAPI schema and the API explorer: `spectacular --validate --fail-on-warn` is clean,
every protected operation names the JWT bearer scheme, and Swagger UI in a real browser
authorizes with an access token and runs "Try it out"."""

import io

import pytest
from django.core.management import call_command
from playwright.sync_api import expect, sync_playwright

from tests.support.browser import launch_chromium
from tests.support.demo_server import DEMO_EMAIL, DEMO_PASSWORD, DemoServer, api


@pytest.fixture(scope="module")
def schema(tmp_path_factory) -> dict:
    import yaml

    path = tmp_path_factory.mktemp("schema") / "schema.yml"
    err = io.StringIO()
    # Raises on any warning or error of the generator and on an invalid OpenAPI document.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path), stderr=err)
    return yaml.safe_load(path.read_text())


def test_the_schema_declares_a_jwt_bearer_scheme(schema):
    assert schema["components"]["securitySchemes"]["jwtAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }


def test_every_operation_with_authentication_names_the_bearer_scheme(schema):
    public = {"/api/v1/auth/register", "/api/v1/auth/login", "/api/v1/auth/refresh"}
    public |= {"/api/v1/auth/logout", "/api/v1/auth/demo"}
    services = {"/api/v1/notifications/publish"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            schemes = {name for item in operation.get("security", []) for name in item}
            if path.rstrip("/") in public:
                assert "jwtAuth" not in schemes, (method, path)
            elif path.rstrip("/") in services:
                assert schemes == {"serviceKey"}, (method, path)
            else:
                assert "jwtAuth" in schemes, (method, path)


def test_the_publish_api_has_a_service_key_scheme_and_its_idempotency_header(schema):
    assert schema["components"]["securitySchemes"]["serviceKey"]["scheme"] == "bearer"
    operation = schema["paths"]["/api/v1/notifications/publish/"]["post"]
    assert [(p["name"], p["in"]) for p in operation["parameters"]] == [
        ("Idempotency-Key", "header")
    ]
    assert set(operation["responses"]) == {"201", "400", "401", "403", "413", "422", "429"}
    assert "application/json" in operation["responses"]["201"]["content"]
    request = operation["requestBody"]["content"]["application/json"]
    assert set(request["examples"]) == {"OneEvent", "ABatch"}
    assert schema["components"]["schemas"]["PublishRequest"]["oneOf"] == [
        {"$ref": "#/components/schemas/PublishEvent"},
        {"$ref": "#/components/schemas/PublishBatch"},
    ]


@pytest.mark.parametrize(
    ("path", "method", "code"),
    [
        ("/api/v1/auth/register", "post", "201"),
        ("/api/v1/auth/login", "post", "200"),
        ("/api/v1/auth/password", "post", "200"),
        ("/api/v1/auth/demo", "post", "200"),
        ("/api/v1/notifications/test", "post", "201"),
        ("/api/v1/notifications/events", "get", "200"),
        ("/api/v1/notifications/status", "get", "200"),
    ],
)
def test_each_auth_and_notification_view_documents_its_response_body(schema, path, method, code):
    operation = next(ops for key, ops in schema["paths"].items() if key.rstrip("/") == path)[method]
    assert "application/json" in operation["responses"][code]["content"], operation["responses"]


def test_the_auth_and_publish_bodies_have_examples(schema):
    for path in ("/api/v1/auth/login", "/api/v1/auth/register", "/api/v1/notifications/test"):
        operation = next(ops for key, ops in schema["paths"].items() if key.rstrip("/") == path)
        assert operation["post"]["requestBody"]["content"]["application/json"]["examples"]


@pytest.mark.live
def test_swagger_ui_authorizes_with_a_token_and_try_it_out_lists_emails():
    with DemoServer() as server, sync_playwright() as playwright:
        status, tokens = api(
            server.http_url,
            "POST",
            "auth/login",
            body={"email": DEMO_EMAIL, "password": DEMO_PASSWORD},
        )
        assert status == 200, tokens
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(20_000)
            page.goto(server.http_url + "/api/v1/docs/")
            page.get_by_role("button", name="Authorize").first.click()
            dialog = page.locator(".modal-ux")
            # The dialog also offers the publish API's serviceKey scheme: fill the JWT one.
            jwt = dialog.locator(".auth-container").filter(has_text="jwtAuth")
            jwt.locator("input").fill(tokens["access"])
            jwt.locator("button.authorize").click()
            expect(jwt.locator("h6")).to_have_text("Authorized")
            jwt.get_by_role("button", name="Close").click()

            operation = page.locator(".opblock-get").filter(has_text="/api/v1/emails/").first
            operation.locator(".opblock-summary").click()
            operation.get_by_role("button", name="Try it out").click()
            operation.get_by_role("button", name="Execute").click()
            live_response = operation.locator(".live-responses-table tbody")
            expect(live_response.locator(".response-col_status").first).to_have_text("200")
            request_url = operation.locator(".request-url pre").first.inner_text()
            assert request_url.endswith("/api/v1/emails/")
            curl = operation.locator(".curl-command").first.inner_text()
            assert f"Authorization: Bearer {tokens['access']}" in curl
        finally:
            browser.close()
