"""A signed access token with a claim of the wrong type closes the socket with 4002 (the same
token classes as REST: reasonflow/users/tokens.py), never 4000."""

import pytest
from asgiref.sync import sync_to_async

from tests.support.ws import expect_close, open_socket
from tests.users.test_token_claims import CASE_IDS, MALFORMED_CLAIMS, signed_tokens

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("memory_layer")]


@pytest.mark.parametrize(("claim", "value"), MALFORMED_CLAIMS, ids=CASE_IDS)
async def test_an_access_token_with_a_malformed_claim_closes_4002(user, claim, value):
    token = (await sync_to_async(signed_tokens)(user, **{claim: value}))["access"]
    comm = await open_socket()
    await comm.send_json_to({"token": token})
    await expect_close(comm, 4002)
