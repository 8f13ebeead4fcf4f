"""Production-safe defaults: no public demo account, no public signing key, no password on a
page, and `check --deploy` clean on the production settings docs/production.md documents."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from reasonflow.safety import DEV_SECRET_KEY, UnsafeSettings, signing_key
from reasonflow.users.models import User
from reasonflow.users.services import DEMO_EMAIL, DEMO_PASSWORD, DemoUserRefused, user_ensure_demo
from tests.support.live import LiveServer

ROOT = Path(__file__).resolve().parents[2]
STRONG_KEY = secrets.token_urlsafe(64)


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run manage.py in a process of its own, with `env` over an environment without DEBUG,
    SECRET_KEY or JWT_SIGNING_KEY (CI's own environment must not decide the outcome)."""
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DEBUG", "SECRET_KEY", "JWT_SIGNING_KEY", "DATABASE_URL"}
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "reasonflow.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def shell(code: str, *, env: dict[str, str]) -> subprocess.CompletedProcess:
    return manage("shell", "--verbosity", "0", "-c", code, env=env)


# --- signing keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SECRET_KEY", None, "SECRET_KEY is not set"),
        ("SECRET_KEY", "", "SECRET_KEY is not set"),
        ("SECRET_KEY", "x" * 49, "too weak"),
        ("SECRET_KEY", "ab" * 40, "too weak"),  # long, but only two distinct characters
        ("SECRET_KEY", DEV_SECRET_KEY, "development key"),
        ("SECRET_KEY", "django-insecure-" + STRONG_KEY, "development key"),
        ("JWT_SIGNING_KEY", "short", "JWT_SIGNING_KEY is too weak"),
    ],
)
def test_an_unsafe_signing_key_is_refused_with_debug_off(name, value, message):
    with pytest.raises(UnsafeSettings, match=message):
        signing_key(name, value, debug=False)


def test_signing_keys_with_debug_on_fall_back_to_the_development_key():
    assert signing_key("SECRET_KEY", None, debug=True) == DEV_SECRET_KEY
    assert signing_key("JWT_SIGNING_KEY", "", debug=True, default="k" * 50) == "k" * 50


def test_a_strong_key_is_used_and_the_jwt_key_defaults_to_it():
    assert signing_key("SECRET_KEY", f" {STRONG_KEY} ", debug=False) == STRONG_KEY
    assert signing_key("JWT_SIGNING_KEY", None, debug=False, default=STRONG_KEY) == STRONG_KEY


@pytest.mark.parametrize(
    "env",
    [
        {"DEBUG": "false"},
        {"DEBUG": "false", "SECRET_KEY": "too-short"},
        {"DEBUG": "false", "SECRET_KEY": DEV_SECRET_KEY},
        {"DEBUG": "false", "SECRET_KEY": STRONG_KEY, "JWT_SIGNING_KEY": DEV_SECRET_KEY},
    ],
    ids=["missing", "short", "committed", "committed-jwt-key"],
)
@pytest.mark.parametrize("command", [("serve", "--port", "1"), ("check",), ("migrate",)])
def test_the_service_refuses_to_start_without_a_safe_key(env, command):
    result = manage(*command, env=env)
    assert result.returncode != 0
    assert "Refusing to start:" in result.stderr
    assert "Traceback" not in result.stderr  # an operator's mistake, said in one line
    assert "secrets.token_urlsafe" in result.stderr  # and how to make a key


def test_the_service_starts_with_a_safe_key_and_debug_off():
    result = manage("check", env={"DEBUG": "false", "SECRET_KEY": STRONG_KEY})
    assert result.returncode == 0, result.stderr


# --- the demo user ---------------------------------------------------------------------------


@pytest.mark.live
def test_serve_with_debug_off_creates_no_demo_user_and_prints_no_password():
    server = LiveServer(env={"DEBUG": "false", "SECRET_KEY": STRONG_KEY}, demo=True)
    with server:
        pass
    out = server.log()
    assert DEMO_PASSWORD not in out and "demo user" not in out
    count = shell(
        "from reasonflow.users.models import User\n"
        f"print(User.objects.filter(email={DEMO_EMAIL!r}).count())",
        env={
            "DEBUG": "false",
            "SECRET_KEY": STRONG_KEY,
            "DATABASE_URL": server.env["DATABASE_URL"],
        },
    )
    assert count.stdout.strip() == "0", count.stderr


@pytest.mark.live
def test_serve_with_debug_off_leaves_a_disabled_demo_user_disabled():
    server = LiveServer(env={"DEBUG": "false", "SECRET_KEY": STRONG_KEY}, demo=True)
    database = {"DATABASE_URL": server.env["DATABASE_URL"]}
    # An operator disabled the demo account of an old development database and changed its
    # password; a production start must leave both alone.
    setup = shell(
        "from django.core.management import call_command; call_command('migrate', verbosity=0)\n"
        "from reasonflow.users.models import User\n"
        f"User.objects.create_user(email={DEMO_EMAIL!r}, password='operator-chosen-9f8e7d', "
        "is_active=False, is_staff=True)",
        env={"DEBUG": "true", **database},
    )
    assert setup.returncode == 0, setup.stderr
    with server:
        pass
    state = shell(
        "from reasonflow.users.models import User\n"
        f"u = User.objects.get(email={DEMO_EMAIL!r})\n"
        f"print(u.is_active, u.check_password({DEMO_PASSWORD!r}), u.is_superuser)",
        env={"DEBUG": "false", "SECRET_KEY": STRONG_KEY, **database},
    )
    assert state.stdout.split() == ["False", "False", "False"], state.stderr


@pytest.mark.live
def test_serve_in_development_says_so_and_prints_the_demo_superuser():
    server = LiveServer(env={"DEBUG": "true"}, demo=True)
    with server:
        pass
    out = server.log()
    assert "development mode" in out
    assert f"{DEMO_EMAIL} / {DEMO_PASSWORD}" in out and "superuser" in out
    assert f"console     http://127.0.0.1:{server.port}/" in out


def test_the_demo_user_is_refused_with_debug_off(db, settings):
    settings.DEBUG = False
    with pytest.raises(DemoUserRefused):
        user_ensure_demo()
    assert not User.objects.filter(email=DEMO_EMAIL).exists()


def test_the_demo_user_in_development_is_an_active_superuser(db, settings):
    settings.DEBUG = True
    User.objects.create_user(email=DEMO_EMAIL, password="something-else-entirely", is_active=False)
    user = user_ensure_demo()
    assert user.is_active and user.is_staff and user.is_superuser
    assert user.check_password(DEMO_PASSWORD)


# --- the console page and its demo sign-in ---------------------------------------------------


def test_the_console_never_shows_a_password(client, db, settings):
    for debug in (False, True):
        settings.DEBUG = debug
        page = client.get("/").content.decode()
        assert DEMO_PASSWORD not in page
        assert 'type="password"' in page  # the login form itself is there
        assert ('id="use-demo"' in page) is debug


def test_demo_sign_in_is_404_with_debug_off_and_creates_nobody(db, settings):
    settings.DEBUG = False
    response = APIClient().post("/api/v1/auth/demo", {}, format="json")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
    assert not User.objects.filter(email=DEMO_EMAIL).exists()


def test_demo_sign_in_in_development_returns_working_tokens(db, settings):
    settings.DEBUG = True
    response = APIClient().post("/api/v1/auth/demo", {}, format="json")
    assert response.status_code == 200
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['access']}")
    status = client.get("/api/v1/notifications/status")
    assert status.status_code == 200
    assert status.json()["user_id"] == str(User.objects.get(email=DEMO_EMAIL).id)


# --- check --deploy on the documented production settings ------------------------------------


def production_env() -> dict[str, str]:
    """The documented production settings (.env.example), with the secrets an operator
    generates filled in."""
    env = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    assert env["DEBUG"] == "false"
    env["SECRET_KEY"] = STRONG_KEY
    env["METRICS_TOKEN"] = secrets.token_urlsafe(32)
    return env


def test_check_deploy_is_clean_on_the_documented_production_settings():
    result = manage("check", "--deploy", env=production_env())
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "System check identified no issues" in output, output
