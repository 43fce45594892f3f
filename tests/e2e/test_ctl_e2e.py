"""`netagent-ctl` drives the whole system: put the seed files, read status, delete."""

from __future__ import annotations

import json

import pytest

from tests.e2e.e2e_common import expect_gone, expect_link, seed
from tests.harness import (
    FIXTURES,
    ControllerProcess,
    EtcdServer,
    HelperSandbox,
    run_ctl,
    wait_until,
)

pytestmark = pytest.mark.root


def test_ctl_put_status_get_list_del(
    etcd: EtcdServer, label: str, helper: HelperSandbox, controller: ControllerProcess
) -> None:
    def ctl(*args: str) -> str:
        return run_ctl(etcd.endpoint, label, *args).stdout

    ctl("put", "veth1", str(FIXTURES / "veth1.json"))
    ctl("put", "veth2", str(FIXTURES / "veth2.json"))
    expect_link(helper, seed("veth1"), "ns1")
    expect_link(helper, seed("veth2"), "ns2")

    def both_configured() -> bool:
        lines = ctl("status").splitlines()
        return any(line.split()[:2] == ["veth1", "CONFIGURED"] for line in lines) and any(
            line.split()[:2] == ["veth2", "CONFIGURED"] for line in lines
        )

    wait_until(both_configured, timeout=30, what="ctl status: both CONFIGURED",
               describe=lambda: ctl("status"))
    assert json.loads(ctl("get", "veth1")) == seed("veth1")
    assert ctl("list").split() == ["veth1", "veth2"]
    as_json = json.loads(ctl("status", "--json"))
    assert as_json["veth1"]["state"] == "CONFIGURED", as_json

    ctl("del", "veth2")
    expect_gone(helper, "veth1", "ns1")
    assert ctl("list").split() == ["veth1"]
    wait_until(lambda: "PENDING" in ctl("status", "veth1"), timeout=30,
               what="ctl status veth1: PENDING", describe=lambda: ctl("status", "veth1"))


def test_ctl_rejects_a_missing_file_naming_it(etcd: EtcdServer, label: str) -> None:
    result = run_ctl(etcd.endpoint, label, "put", "veth1", "/nonexistent/veth1.json",
                     check=False)
    assert result.returncode != 0
    assert "/nonexistent/veth1.json" in result.stderr
