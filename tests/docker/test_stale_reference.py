"""A container's old SandboxKey must never reach a namespace again (the stale-PID problem).

The controller names a microservice's namespace by its Docker SandboxKey, never by PID.
Here a batch is signed exactly as the controller would sign it, but with the SandboxKey of
a sandbox that no longer exists; the helper must refuse it and create nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from harness import HelperSandbox, KeyPair, link, links_of_pid

from controller.helper_client import HelperClient
from controller.ops import CreateVethPair, LinkSpec, NsRef
from controller.signer import Signer
from netagent_api import helper_pb2

pytestmark = [pytest.mark.root, pytest.mark.docker]

REFUSALS = {helper_pb2.NAMESPACE_GONE, helper_pb2.POLICY_REFUSED}


@pytest.fixture
def submit(helper: HelperSandbox, keys: KeyPair) -> Iterator[Callable[[str], Any]]:
    client = HelperClient(str(helper.socket))
    key = load_pem_private_key(keys.signing_key.read_bytes(), None)  # owned by the controller
    assert isinstance(key, Ed25519PrivateKey)
    signer = Signer(key)

    def create_into(sandbox_key: str) -> helper_pb2.BatchReply:
        op = CreateVethPair(LinkSpec("stale0", NsRef.of_path(sandbox_key)),
                            LinkSpec("stale1", NsRef.host()))
        return client.submit(signer.sign((op,), None, "stale-test"))

    try:
        yield create_into
    finally:
        client.close()


def _refused(reply: helper_pb2.BatchReply, stale: str) -> None:
    kind = helper_pb2.ErrorKind.Name(reply.error_kind)
    assert not reply.ok and reply.error_kind in REFUSALS, (kind, reply.error)
    assert stale in reply.error
    print(f"\nstale SandboxKey refused: {kind}: {reply.error}")


def test_sandbox_key_of_a_restarted_container_is_refused(
    helper: HelperSandbox, submit: Callable[[str], Any], microservice: Callable[..., Any],
    ms_label: str,
) -> None:
    container = microservice(ms_label)
    stale = container.attrs["NetworkSettings"]["SandboxKey"]
    container.restart(timeout=0)
    container.reload()
    assert container.attrs["NetworkSettings"]["SandboxKey"] != stale
    _refused(submit(stale), stale)
    assert link(helper, "stale1") is None
    assert "stale0" not in links_of_pid(helper, container.attrs["State"]["Pid"])


def test_sandbox_key_of_a_stopped_container_is_refused(
    helper: HelperSandbox, submit: Callable[[str], Any], microservice: Callable[..., Any],
    ms_label: str,
) -> None:
    container = microservice(ms_label)
    stale = container.attrs["NetworkSettings"]["SandboxKey"]
    assert submit(stale).ok, "the live SandboxKey must work (control)"
    container.stop(timeout=0)
    _refused(submit(stale), stale)
