"""A huge bad value is not copied into its status (issue 12, 3b: a 100 KB bad `name`
made a 100,150-byte status value)."""

from __future__ import annotations

import json

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller.agent import Agent
from controller.events import ConfigSnapshot
from controller.model import InvalidValue, parse_interface
from controller.ops import State, Status
from controller.signer import Signer
from controller.status import MAX_TEXT_CHARS, encode
from tests.unit.test_agent import PAIR, FakeHelper, Statuses

KEY = "/vnf-agent/vpp1/linux/config/v1/interface/veth1"


def huge_name() -> bytes:
    value = json.loads(PAIR["veth1"])
    value["name"] = "n" * 100_000
    return json.dumps(value).encode()


def test_a_huge_bad_value_is_shortened_in_the_message_that_names_it() -> None:
    try:
        parse_interface(KEY, huge_name())
    except InvalidValue as err:
        text = str(err)
    assert len(text) < 400, len(text)
    assert "field 'name'" in text and "differs from the key's last segment 'veth1'" in text
    assert "99922 characters]" in text, text


def test_the_published_status_of_a_huge_bad_value_is_small() -> None:
    helper, statuses = FakeHelper(), Statuses()
    agent = Agent("vpp1", helper, Signer(Ed25519PrivateKey.generate()), statuses,
                  config_prefix="/vnf-agent/vpp1/linux/config/v1/interface/")
    agent.process([ConfigSnapshot({"veth1": huge_name(), "veth2": PAIR["veth2"]})])
    assert statuses.state("veth1") == State.ERROR
    assert len(encode(statuses.last["veth1"])) < 500


def test_any_reason_and_warning_is_cut_to_the_limit() -> None:
    words = " ".join(["word"] * 50_000)
    published = json.loads(encode(Status(State.ERROR, words, (words,))))
    for text in (published["reason"], published["warnings"][0]):
        assert len(text) <= MAX_TEXT_CHARS + 40 and text.endswith("more characters]")
    assert encode(Status(State.ERROR, "short  reason")) == \
        b'{"reason": "short reason", "state": "ERROR"}'
