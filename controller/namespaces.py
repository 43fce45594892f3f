"""Where each configured namespace is now: the I/O the pure reconciler must not do.

Named namespaces are always there (the helper creates them); PID and file references while
their process or file exists; microservices while Docker lists their container. A namespace
the helper reported gone, or refused, is unavailable until the next timer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from controller.events import Microservice, MicroservicesChanged
from controller.model import NamespaceConfig
from controller.ops import NsRef
from controller.reconcile import Availability

Identity = tuple[str, str | int]


class Namespaces:
    def __init__(self) -> None:
        self._microservices: MicroservicesChanged | None = None
        self._gone: set[Identity] = set()
        self._refused: dict[Identity, str] = {}

    # ---- what the agent learns -------------------------------------------------------

    def docker_changed(self, event: MicroservicesChanged) -> set[str]:
        """Take Docker's new view; return the labels whose container started, stopped or
        moved to another sandbox."""
        old = self._microservices.running if self._microservices is not None else {}
        self._microservices = event
        self._gone.clear()

        def sandbox(running: Mapping[str, Microservice], label: str) -> str:
            found = running.get(label)
            return found.sandbox_key if found is not None else ""

        return {label for label in {*old, *event.running}
                if sandbox(old, label) != sandbox(event.running, label)}

    def mark_gone(self, ref: NsRef) -> None:
        """The helper found the namespace gone (NAMESPACE_GONE)."""
        if ref.kind != "host":
            self._gone.add(ref.identity())

    def refuse(self, ref: NsRef, why: str) -> None:
        """The helper refused the namespace (policy, or it cannot be opened)."""
        self._refused[ref.identity()] = why

    def forget_transient(self) -> None:
        """The timer fired: try gone and refused namespaces again."""
        self._gone.clear()
        self._refused.clear()

    @property
    def refused(self) -> Mapping[Identity, str]:
        return self._refused

    # ---- resolution ------------------------------------------------------------------

    def resolve(self, ns: NamespaceConfig) -> Availability:
        availability = self.locate(ns)
        ref = availability.ref
        if ref is not None and ref.identity() in self._gone:
            return Availability(None, f"{ref.describe()} is gone; waiting for it to return")
        if ref is not None and ref.identity() in self._refused:
            return Availability(None, self._refused[ref.identity()])
        return availability

    def locate(self, ns: NamespaceConfig) -> Availability:
        """Where the namespace is, ignoring what the helper said about it."""
        if ns.kind == "named":
            return Availability(NsRef.named(ns.name))
        if ns.kind == "pid":
            if os.path.exists(f"/proc/{ns.pid}"):
                return Availability(NsRef.of_pid(ns.pid))
            return Availability(None, f"waiting for process {ns.pid}")
        if ns.kind == "file":
            if os.path.exists(ns.path):
                return Availability(NsRef.of_path(ns.path))
            return Availability(None, f"waiting for namespace file {ns.path}")
        if ns.kind == "microservice":
            return self._microservice(ns.microservice)
        return Availability(NsRef.host())

    def _microservice(self, label: str) -> Availability:
        known = self._microservices
        found = known.running.get(label) if known is not None else None
        outage = ""
        if known is not None and not known.connected:
            outage = known.reason or "Docker unreachable"
        if found is not None:
            warnings = found.warnings
            if outage:
                last_seen = f"{outage}; keeping container {found.container_id[:12]} as last seen"
                warnings = (*warnings, last_seen)
                # The container may have died meanwhile: its SandboxKey is then stale.
                return Availability(NsRef.of_path(found.sandbox_key), outage, warnings,
                                    hold=True)
            return Availability(NsRef.of_path(found.sandbox_key), warnings=warnings)
        reason = f"waiting for microservice {label}"
        if known is None:
            return Availability(None, f"{reason}; Docker not listed yet", hold=True)
        if outage:
            return Availability(None, f"{reason}; {outage}", hold=True)
        return Availability(None, reason)
