"""Adapter: keeps the helper's read-only `WatchLinks` stream open and posts what it says.

At every (re)connection it posts `HelperReconnected` with the helper's instance id (the
first message of a stream), so a restarted helper is resynced at once; changes to this
agent's links post `LinksChanged`. A lost stream is reopened every `RETRY_S`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import grpc

from controller import wire
from controller.events import Event, HelperReconnected, LinksChanged
from netagent_api import helper_pb2

log = logging.getLogger(__name__)

RETRY_S = 0.25


class HelperEvents:
    def __init__(self, client: Any, owner: str, post: Callable[[Event], None],
                 retry_s: float = RETRY_S) -> None:
        self._client = client
        self._owner = owner
        self._post = post
        self._retry_s = retry_s
        self._stopping = threading.Event()
        self._call: Any = None
        self._lost_logged = False
        self._thread = threading.Thread(target=self._run, name="helper-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        call = self._call
        if call is not None:
            call.cancel()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._call = self._client.watch_links()
                self._follow(self._call)
            except grpc.RpcError as err:
                if not self._stopping.is_set() and not self._lost_logged:
                    code = err.code() if isinstance(err, grpc.Call) else None
                    log.warning("helper link events unavailable (%s); retrying every %.2fs",
                                code, self._retry_s)
                    self._lost_logged = True
            except Exception:
                log.exception("helper link events failed; retrying")
            self._stopping.wait(self._retry_s)

    def _follow(self, call: Any) -> None:
        first = True
        for message in call:
            if first:
                first = False
                self._lost_logged = False
                log.info("helper link events from instance %s", message.helper_instance.hex()[:12])
                self._post(HelperReconnected(message.helper_instance))
                continue
            changed = self._changed(message)
            if changed is not None:
                self._post(changed)

    def _changed(self, message: helper_pb2.LinkEvent) -> LinksChanged | None:
        names = tuple(sorted({c.name for c in message.changes if c.owner == self._owner}))
        gone = tuple(wire.ns_from_proto(ref).describe() for ref in message.namespace_gone)
        if not names and not gone and not message.overrun:
            return None
        return LinksChanged(names, message.overrun, gone)
