"""Test harness shared by every integration and end-to-end test of netagent.

Import it as `tests.harness` (`tests/conftest.py` puts the repository root on `sys.path`).
The pieces, each usable on its own:

- `EtcdServer` / `EtcdKV` / `etcd_put`, `etcd_get`, `etcd_delete`, `status`: a throwaway
  etcd 3.4 on free loopback ports, and the northbound keys of one agent label;
  `watched_values`: every value a key takes (a watch without etcd3's watch thread).
- `HelperSandbox`: `netlinkd serve` inside a scratch mount+network namespace with a
  private `/run/netns`; `ip_json`, `netns_list`, `run`, `spawn`, `restart`, `stop`.
- `ControllerProcess`: `netagent-controller run` as uid 65534 with no capabilities.
- `make_keys`: signing and trust keys (`netagent-ctl keygen`).
- `ReadySocket`: a `$NOTIFY_SOCKET` noting when each READY=1 arrived.
- `links`, `link`, `LinkView`: links as `ip -j` shows them inside the sandbox.
- `wait_until`: poll for eventual state (tests never assert on elapsed time).

The fixtures built from them (`etcd`, `label`, `kv`, `workdir`, `keys`, `helper`,
`start_controller`, `controller`) live in `tests/conftest.py`.
"""

from .audit import batch_results, changing_intents, intents_changing, records, records_in
from .etcd import (
    EtcdKV,
    EtcdServer,
    config_key,
    etcd_delete,
    etcd_get,
    etcd_put,
    free_port,
    new_label,
    status,
    status_key,
    watched_values,
)
from .host import host_differences, host_snapshot
from .iproute import LinkView, link, links, links_in_file, links_of_pid
from .keys import KeyPair, make_keys
from .notify import ReadySocket
from .paths import FIXTURES, REPO, TEST_GID, UNPRIVILEGED_UID, venv_tool
from .processes import ControllerProcess, StartController, proc_status, run_ctl, unprivileged
from .sandbox import HelperSandbox, SandboxError, stop_process
from .waiting import WaitTimeout, wait_until

__all__ = [
    "FIXTURES",
    "REPO",
    "TEST_GID",
    "UNPRIVILEGED_UID",
    "ControllerProcess",
    "EtcdKV",
    "EtcdServer",
    "HelperSandbox",
    "KeyPair",
    "LinkView",
    "ReadySocket",
    "SandboxError",
    "StartController",
    "WaitTimeout",
    "batch_results",
    "changing_intents",
    "config_key",
    "etcd_delete",
    "etcd_get",
    "etcd_put",
    "free_port",
    "host_differences",
    "host_snapshot",
    "intents_changing",
    "link",
    "links",
    "links_in_file",
    "links_of_pid",
    "make_keys",
    "new_label",
    "proc_status",
    "records",
    "records_in",
    "run_ctl",
    "status",
    "status_key",
    "stop_process",
    "unprivileged",
    "venv_tool",
    "wait_until",
    "watched_values",
]
