"""A real controller's /healthz, /readyz and /metrics (--metrics-address, loopback)."""

from __future__ import annotations

import urllib.error
import urllib.request

from tests.e2e.e2e_common import expect_state, seed
from tests.harness import EtcdKV, HelperSandbox, StartController, free_port, wait_until


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:
        return 0, ""


def sample(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_endpoints_show_batches_states_latency_and_connections(
    kv: EtcdKV, helper: HelperSandbox, start_controller: StartController
) -> None:
    port = free_port()
    start_controller("--metrics-address", f"127.0.0.1:{port}", "--no-docker")
    wait_until(lambda: get(port, "/healthz")[0] == 200, what="/healthz")
    kv.put("veth1", seed("veth1"))
    kv.put("veth2", seed("veth2"))
    expect_state(kv, "veth1", "CONFIGURED")
    expect_state(kv, "veth2", "CONFIGURED")
    wait_until(lambda: get(port, "/readyz") == (200, "ready\n"), what="/readyz 200",
               describe=lambda: get(port, "/readyz"))
    _code, text = get(port, "/metrics")
    assert sample(text, 'netagent_batches_total{result="applied"}') >= 1, text
    assert sample(text, 'netagent_operations_total{kind="create_veth_pair"}') == 1, text
    assert sample(text, 'netagent_interfaces{state="CONFIGURED"}') == 2, text
    assert sample(text, "netagent_etcd_to_kernel_seconds_count") >= 2, text
    assert sample(text, 'netagent_connected{peer="etcd"}') == 1, text
    assert sample(text, 'netagent_connected{peer="helper"}') == 1, text
    assert 'peer="docker"' not in text  # not watched: no gauge rather than a false alarm

    helper.stop_helper()
    kv.put("veth1", dict(seed("veth1"), mtu=1400))  # a batch that cannot be sent
    wait_until(lambda: get(port, "/readyz")[0] == 503, what="/readyz 503",
               describe=lambda: get(port, "/readyz"))
    assert get(port, "/readyz")[1].startswith("helper not connected: ")
    assert get(port, "/healthz")[0] == 200
    assert sample(get(port, "/metrics")[1], 'netagent_connected{peer="helper"}') == 0
    assert get(port, "/nothing")[0] == 404
