"""A resumed watch whose token etcd refuses logs in again.

In the fleet test, watches resumed on a member that had been restarted were cancelled with
"invalid auth token", and the watcher retried the refused token once per backoff until
another client of the process happened to log in. Here the refusal is made certain: the
process's shared token is replaced by one etcd never issued while the member restarts."""

from __future__ import annotations

import threading

from controller import keys
from controller.etcd_client import ClientFactory
from controller.etcd_options import EtcdOptions
from controller.etcd_watch import EtcdWatcher
from controller.events import ConfigPut, ConfigSnapshot, Event
from tests.fleet.cluster import TlsCluster
from tests.harness import new_label, wait_until


def test_a_watch_resumed_on_a_restarted_member_logs_in_again(cluster: TlsCluster) -> None:
    label = new_label()
    member = cluster.members[0]
    everything = cluster.options("root", cluster.root_password)
    only_member = EtcdOptions((member.endpoint,), everything.cacert, everything.cert,
                              everything.key, everything.user, everything.password)
    seen: list[Event] = []
    lock = threading.Lock()

    def post(event: Event) -> None:
        with lock:
            seen.append(event)

    factory = ClientFactory(only_member)
    watcher = EtcdWatcher(factory, label, post)
    watcher.start()
    try:
        wait_until(lambda: any(isinstance(e, ConfigSnapshot) for e in seen), timeout=30,
                   what="the first listing")
        factory.token = "simple-token.that.etcd.never.issued"
        member.kill()
        member.start()
        wait_until(cluster.healthy, timeout=60, what="the member back",
                   describe=cluster.log_tails)
        root = cluster.root_client()
        root.put(keys.config_key(label, "after"), b"1")
        root.close()
        wait_until(lambda: any(isinstance(e, ConfigPut) and (e.name, e.raw) == ("after", b"1")
                               for e in seen), timeout=30,
                   what="the put after the restart, through the resumed watch")
        assert sum(isinstance(e, ConfigSnapshot) for e in seen) == 1, "resumed, not relisted"
        assert factory.authentications == 2  # the first login, and one after the refusal
    finally:
        watcher.stop()
