"""systemd's readiness protocol (sd_notify): one datagram to $NOTIFY_SOCKET.

A few lines instead of a dependency, shared by netagent-controller and netlinkd (the helper
imports nothing from `controller`). Outside systemd (no $NOTIFY_SOCKET) it does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1"); True if a service manager was told."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot tell systemd %s over %s: %s", state, address, exc)
        return False
    return True


def ready() -> bool:
    """Tell systemd the service is ready (Type=notify units)."""
    return notify("READY=1")
