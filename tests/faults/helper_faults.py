"""Killing the helper on purpose: netlinkd started so that it SIGKILLs itself at a chosen
netlink request (tests/faults/netlinkd_with_faults.py), and what such a kill may leave."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.harness import HelperSandbox, wait_until

_WRAPPER = Path(__file__).resolve().with_name("netlinkd_with_faults.py")
KILL_AT_ENV = "NETLINKD_FAULT_KILL_AT"
TEAR_HEAD_AT_ENV = "NETLINKD_FAULT_TEAR_HEAD_AT"


def start_helper(helper: HelperSandbox, *, kill_at: int | None = None,
                 tear_head_at: int | None = None) -> None:
    """(Re)start netlinkd in the sandbox; with `kill_at`, it SIGKILLs itself right before
    its (kill_at + 1)-th kernel-changing netlink request; with `tear_head_at`, half-way
    through its (tear_head_at + 1)-th in-place write of the audit head."""
    helper.stop_helper()
    helper.program = (sys.executable, str(_WRAPPER))
    helper.env = {} if kill_at is None else {KILL_AT_ENV: str(kill_at)}
    if tear_head_at is not None:
        helper.env[TEAR_HEAD_AT_ENV] = str(tear_head_at)
    helper.start_helper()


def wait_helper_died(helper: HelperSandbox, timeout: float = 30) -> None:
    wait_until(helper.helper_exited, timeout=timeout, what="netlinkd to die",
               describe=helper.log_tail)


def link_groups(helper: HelperSandbox) -> dict[tuple[str | None, str], int]:
    """The link group of every link but loopback, by (named namespace or None, name)."""
    groups: dict[tuple[str | None, str], int] = {}
    for netns in (None, *helper.netns_list()):
        for entry in helper.ip_json("-d", "link", "show", netns=netns):
            if entry["ifname"] != "lo":
                group = entry.get("group", "default")  # `ip` shows it as a signed number
                number = 0 if group == "default" else int(group) % (1 << 32)
                groups[(netns, entry["ifname"])] = number
    return groups


def grouped_links(helper: HelperSandbox) -> list[str]:
    """Links left in a link group (a batch's; netagent's own links are all in group 0)."""
    return [f"{name} in {netns or 'sandbox'} is in link group {group}"
            for (netns, name), group in sorted(link_groups(helper).items(), key=str) if group]
