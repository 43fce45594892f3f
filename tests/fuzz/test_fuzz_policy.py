"""Property tests over the helper's policy check (`netlinkd.policy.check_batch`).

Whatever a signed batch contains, the policy either accepts it or refuses it with a typed
`HelperError`: no other exception can reach the server. Paths point into a real scratch
directory tree with a symlink out of it. CI budget: 200 examples per property.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netagent_api import helper_pb2
from netlinkd import policy
from netlinkd.errors import HelperError

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")),  # CI budget unless overridden
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
KINDS = ("create_veth_pair", "delete_link", "set_link", "add_address", "del_address")

names = st.one_of(st.sampled_from(["lo", "veth1", "a" * 15, "a" * 16, "..", "a/b", ""]),
                  st.text(max_size=20))
addresses = st.one_of(st.sampled_from(["10.0.0.1/24", "fe80::1/64", "10.0.0.1", "1.2.3.4/33"]),
                      st.text(max_size=40))
macs = st.one_of(st.sampled_from(["02:00:00:00:00:01", "01:00:5e:00:00:01", "0:0:0:0:0:0"]),
                 st.text(max_size=20))
mtus = st.one_of(st.sampled_from([0, 67, 68, 1500, 65535, 65536]),
                 st.integers(min_value=0, max_value=2**32 - 1))


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> policy.Policy:
    root = tmp_path_factory.mktemp("policy")
    allowed = root / "netns"
    allowed.mkdir()
    (allowed / "ns1").touch()
    (allowed / "out").symlink_to("/etc/passwd")
    return policy.Policy(netns_dirs=(str(allowed),), max_ops_per_batch=8,
                         max_addresses_per_link=3)


def refs(base: Path) -> st.SearchStrategy[helper_pb2.NamespaceRef]:
    paths = st.one_of(
        st.sampled_from([f"{base}/ns1", f"{base}/out", f"{base}/../x", "/etc/passwd", "", "/"]),
        st.text(max_size=60),
    )
    return st.one_of(
        st.just(helper_pb2.NamespaceRef()),
        st.builds(lambda n: helper_pb2.NamespaceRef(name=n), names),
        st.builds(lambda p: helper_pb2.NamespaceRef(pid=p), st.integers(0, 2**31 - 1)),
        st.builds(lambda p: helper_pb2.NamespaceRef(path=p), paths),
    )


def link_specs(base: Path) -> st.SearchStrategy[helper_pb2.LinkSpec]:
    return st.builds(
        lambda name, ref, mac, mtu, addrs: helper_pb2.LinkSpec(
            name=name, netns=ref, mac=mac, mtu=mtu, addresses=addrs
        ),
        names, refs(base), macs, mtus, st.lists(addresses, max_size=5),
    )


def operations(base: Path) -> st.SearchStrategy[helper_pb2.Operation]:
    def build(kind: str, a: helper_pb2.LinkSpec, b: helper_pb2.LinkSpec, address: str,
              mtu: int, mac: str) -> helper_pb2.Operation:
        target = {"name": a.name, "netns": a.netns}
        if kind == "create_veth_pair":
            return helper_pb2.Operation(create_veth_pair=helper_pb2.CreateVethPair(a=a, b=b))
        if kind == "delete_link":
            return helper_pb2.Operation(delete_link=helper_pb2.DeleteLink(**target))
        if kind == "set_link":
            return helper_pb2.Operation(set_link=helper_pb2.SetLink(**target, mtu=mtu, mac=mac))
        if kind == "add_address":
            return helper_pb2.Operation(
                add_address=helper_pb2.AddAddress(**target, address=address))
        return helper_pb2.Operation(del_address=helper_pb2.DelAddress(**target, address=address))

    spec = link_specs(base)
    return st.one_of(
        st.just(helper_pb2.Operation()),
        st.builds(build, st.sampled_from(KINDS), spec, spec, addresses, mtus, macs),
    )


@FUZZ
@given(data=st.data())
def test_any_batch_is_accepted_or_refused_with_a_typed_error(
    rules: policy.Policy, data: st.DataObject
) -> None:
    base = Path(rules.netns_dirs[0])
    batch = helper_pb2.Batch(
        owner=data.draw(st.one_of(st.just("t"), st.text(max_size=70))),
        operations=data.draw(st.lists(operations(base), max_size=10)),
        observe=helper_pb2.ObserveRequest(netns=data.draw(st.lists(refs(base), max_size=3))),
    )
    try:
        policy.check_batch(rules, batch)
    except HelperError:
        return
    for op in batch.operations:
        kind = op.WhichOneof("op")
        assert kind is not None
        pair = op.create_veth_pair
        named = {pair.a.name, pair.b.name} if kind == "create_veth_pair" else {
            getattr(op, kind).name}
        assert "lo" not in named
    for _, ref in policy.namespace_refs(batch):
        if ref.WhichOneof("kind") == "path":
            assert os.path.dirname(os.path.realpath(ref.path)) == os.path.realpath(base), ref.path
