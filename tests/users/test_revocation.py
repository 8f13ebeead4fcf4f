"""Revocation: logout, a password change, deactivation, deletion or any revoking update of a
user closes that user's open sockets (4002), on every channel layer; other saves keep them."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.hashers import make_password
from rest_framework.test import APIClient

from reasonflow.users.models import User
from reasonflow.users.services import user_change_password, user_issue_tokens
from tests.conftest import access_token_for
from tests.support.ws import connect, expect_close, open_socket

pytestmark = pytest.mark.django_db(transaction=True)

STRONG = "quiet-lantern-orbit-73"


async def closes_within(comm, code: int, seconds: float) -> None:
    """The socket is closed with `code` within `seconds` (its cleanup may take longer)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    output = await comm.receive_output(seconds)
    assert loop.time() - started <= seconds
    assert output == {"type": "websocket.close", "code": code}, output
    await comm.send_input({"type": "websocket.disconnect", "code": code})
    await comm.wait(10)


# --- revocation --------------------------------------------------------------------------------


@pytest.mark.usefixtures("channel_layer_kind")
async def test_logout_closes_every_socket_of_the_user_within_a_second(user, other_user):
    tokens = await sync_to_async(user_issue_tokens)(user=user)
    sockets = [(await connect(tokens["access"]))[0] for _ in range(2)]
    bystander, _ = await connect(access_token_for(other_user))

    def logout():
        return APIClient().post(
            "/api/v1/auth/logout", {"refresh": tokens["refresh"]}, format="json"
        )

    response = await sync_to_async(logout)()
    assert response.status_code == 204
    for comm in sockets:
        await closes_within(comm, 4002, 1.0)
    await bystander.send_json_to({"type": "ping"})
    assert await bystander.receive_json_from(timeout=5) == {"type": "pong"}
    await bystander.disconnect()

    late = await open_socket()
    await late.send_json_to({"token": tokens["access"]})
    await expect_close(late, 4002)


@pytest.mark.usefixtures("channel_layer_kind")
async def test_a_password_change_closes_the_users_sockets(user):
    comm, _ = await connect(access_token_for(user))
    await sync_to_async(user_change_password)(user=user, new_password=STRONG)
    await closes_within(comm, 4002, 1.0)


@pytest.mark.usefixtures("channel_layer_kind")
async def test_deactivating_a_user_closes_their_sockets(user):
    comm, _ = await connect(access_token_for(user))
    user.is_active = False
    await sync_to_async(user.save)()
    await closes_within(comm, 4002, 1.0)


@pytest.mark.usefixtures("channel_layer_kind")
async def test_deleting_a_user_closes_their_sockets(user):
    comm, _ = await connect(access_token_for(user))
    await sync_to_async(user.delete)()
    await closes_within(comm, 4002, 1.0)


@pytest.mark.usefixtures("channel_layer_kind")
async def test_an_unrelated_save_of_the_user_keeps_their_sockets(user):
    comm, _ = await connect(access_token_for(user))
    user.full_name = "Renamed"
    await sync_to_async(user.save)()
    await comm.send_json_to({"type": "ping"})
    assert await comm.receive_json_from(timeout=5) == {"type": "pong"}
    await comm.disconnect()


# A change that sends no revocation message (a bulk UPDATE, or another process on the in-memory
# layer) is found by the delivery watch, which reads every connected user's token state.
REVOKING_UPDATES = {
    "deactivation": lambda user: {"is_active": False},
    "logout": lambda user: {"token_version": user.token_version + 1},
    "password change": lambda user: {"password": make_password(STRONG)},
}


@pytest.mark.usefixtures("channel_layer_kind")
@pytest.mark.parametrize("change", sorted(REVOKING_UPDATES))
async def test_a_revoking_update_without_a_signal_closes_the_socket_within_a_tick(
    user, other_user, settings, change
):
    settings.NOTIFICATIONS_CATCHUP_INTERVAL = 0.2
    tokens = await sync_to_async(user_issue_tokens)(user=user)
    comm, _ = await connect(tokens["access"])
    bystander, _ = await connect(access_token_for(other_user))
    fields = REVOKING_UPDATES[change](user)
    await User.objects.filter(pk=user.pk).aupdate(**fields)  # no signal, no message
    await closes_within(comm, 4002, 1.0)
    await bystander.send_json_to({"type": "ping"})
    assert await bystander.receive_json_from(timeout=5) == {"type": "pong"}
    await bystander.disconnect()


@pytest.mark.usefixtures("channel_layer_kind")
async def test_the_delivery_watch_keeps_sockets_whose_tokens_still_pass(user, settings):
    # The socket keeps only the claims the policy reads; with them it must reach the verdict
    # REST reaches with the whole token, also for a token without the version claim.
    settings.NOTIFICATIONS_CATCHUP_INTERVAL = 0.1
    versioned, _ = await connect((await sync_to_async(user_issue_tokens)(user=user))["access"])
    unversioned, _ = await connect(access_token_for(user))
    await User.objects.filter(pk=user.pk).aupdate(full_name="Renamed")  # unrelated
    await asyncio.sleep(0.5)  # several ticks
    for comm in [versioned, unversioned]:
        await comm.send_json_to({"type": "ping"})
        assert await comm.receive_json_from(timeout=5) == {"type": "pong"}
    await User.objects.filter(pk=user.pk).aupdate(token_version=1)
    await closes_within(versioned, 4002, 1.0)
    await closes_within(unversioned, 4002, 1.0)
