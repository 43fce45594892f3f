"""Docker adapter: which running container serves each microservice label.

A microservice is a running container whose environment (`Config.Env`) holds
`MICROSERVICE_LABEL=<label>`. Its network namespace is named by the container's Docker
`SandboxKey`, an nsfs bind mount that disappears with the sandbox, so a reused PID can
never redirect an operation.

Pure part: `facts_from_inspect` and `choose_microservices` turn `docker inspect` documents
into the label -> `Microservice` map; they take plain mappings and need no Docker.
Shell part: `MicroserviceWatcher` lists, inspects and follows Docker events on one thread
and posts `MicroservicesChanged` whenever the map or the connection state changes. The
docker SDK (untyped) is used only inside the shell part of this module, and imported on
that thread: with requests and urllib3 it takes longer to import than everything the
controller needs before its first batch.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from controller.events import Event, Microservice, MicroservicesChanged

log = logging.getLogger(__name__)

LABEL_VARIABLE = "MICROSERVICE_LABEL"
EVENT_FILTERS: Mapping[str, object] = {
    "type": "container",
    "event": ["start", "die", "destroy", "stop", "kill"],
}
FIRST_RETRY_DELAY = 0.2
REQUEST_TIMEOUT = 30.0  # list/inspect calls; the event stream itself has no timeout
SHORT_ID = 12
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")
_T = TypeVar("_T")


class MalformedInspect(ValueError):
    """A `docker inspect` document lacks a field or has the wrong type. Not retriable."""

    def __init__(self, container: str, field: str, problem: str) -> None:
        super().__init__(f"container {container}: field {field} {problem}")
        self.container = container
        self.field = field
        self.problem = problem


@dataclass(frozen=True)
class ContainerFacts:
    """What the watcher keeps about one running container."""

    container_id: str
    name: str
    label: str | None
    sandbox_key: str
    network_mode: str
    pid: int
    started_at: str
    started_ns: int


# ---------------------------------------------------------------- pure part


def _field(doc: Mapping[str, object], container: str, path: str) -> object:
    value: object = doc
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise MalformedInspect(container, path, "is missing")
        value = value[part]
    return value


def _typed(doc: Mapping[str, object], container: str, path: str, kind: type[_T]) -> _T:
    value = _field(doc, container, path)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        problem = f"has type {type(value).__name__}, expected {kind.__name__}"
        raise MalformedInspect(container, path, problem)
    return value


def label_from_env(env: Iterable[str]) -> str | None:
    """The microservice label in a container environment; the last definition wins."""
    label: str | None = None
    for entry in env:
        key, sep, value = entry.partition("=")
        if key == LABEL_VARIABLE and sep:
            label = value or None
    return label


def parse_started_at(text: str) -> int:
    """Docker's RFC 3339 time with up to nanosecond digits -> nanoseconds since the epoch.

    Docker trims trailing zeros of the fraction, so these strings do not sort as text.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not an RFC 3339 time")
    seconds, fraction, zone = match.groups()
    moment = datetime.fromisoformat(seconds + ("+00:00" if zone == "Z" else zone))
    return int(moment.timestamp()) * 1_000_000_000 + int((fraction or "").ljust(9, "0"))


def facts_from_inspect(doc: Mapping[str, object]) -> ContainerFacts | None:
    """One `docker inspect` document -> facts, or None when the container is not running."""
    container = str(doc.get("Id", "<no Id>"))
    container_id = _typed(doc, container, "Id", str)
    if not _typed(doc, container, "State.Running", bool):
        return None
    env = _field(doc, container, "Config.Env")
    if env is None:
        env = []
    if not isinstance(env, list) or not all(isinstance(item, str) for item in env):
        raise MalformedInspect(container, "Config.Env", "is not a list of strings")
    started_at = _typed(doc, container, "State.StartedAt", str)
    try:
        started_ns = parse_started_at(started_at)
    except ValueError as exc:
        raise MalformedInspect(container, "State.StartedAt", f"is not a time: {exc}") from None
    return ContainerFacts(
        container_id=container_id,
        name=str(doc.get("Name", "")).lstrip("/"),
        label=label_from_env(env),
        sandbox_key=_typed(doc, container, "NetworkSettings.SandboxKey", str),
        network_mode=_typed(doc, container, "HostConfig.NetworkMode", str),
        pid=_typed(doc, container, "State.Pid", int),
        started_at=started_at,
        started_ns=started_ns,
    )


def resolve_sandbox(facts: ContainerFacts, running: Iterable[ContainerFacts]) -> str:
    """The namespace file of a container; `container:<id>` mode borrows its provider's."""
    if facts.sandbox_key:
        return facts.sandbox_key
    mode, _, ref = facts.network_mode.partition(":")
    if mode != "container" or not ref:
        return ""
    for other in running:
        if other.container_id.startswith(ref) or other.name == ref.lstrip("/"):
            return other.sandbox_key
    return ""


def _short(container_id: str) -> str:
    return container_id[:SHORT_ID]


def _duplicate_warning(label: str, ranked: list[ContainerFacts]) -> tuple[str, ...]:
    if len(ranked) < 2:
        return ()
    parts = [f"{_short(ranked[0].container_id)} (used)"]
    parts += [f"{_short(other.container_id)} (ignored)" for other in ranked[1:]]
    return (f"microservice {label} runs in {len(ranked)} containers: {', '.join(parts)}",)


def choose_microservices(
    running: Iterable[ContainerFacts],
) -> tuple[dict[str, Microservice], tuple[str, ...]]:
    """label -> winning container (the most recently started), plus problems to log.

    A labelled container without a namespace file of its own or of its network provider
    cannot be referenced safely (a PID could be reused) and is left out with a problem.
    """
    everything = list(running)
    by_label: dict[str, list[tuple[ContainerFacts, str]]] = {}
    problems: list[str] = []
    for facts in everything:
        if facts.label is None:
            continue
        sandbox = resolve_sandbox(facts, everything)
        if not sandbox:
            problems.append(
                f"container {_short(facts.container_id)} (microservice {facts.label}) has no"
                f" network namespace file (network mode {facts.network_mode!r}); ignored"
            )
            continue
        by_label.setdefault(facts.label, []).append((facts, sandbox))
    chosen: dict[str, Microservice] = {}
    for label, candidates in by_label.items():
        candidates.sort(key=lambda item: (item[0].started_ns, item[0].container_id), reverse=True)
        winner, sandbox = candidates[0]
        chosen[label] = Microservice(
            label=label,
            container_id=winner.container_id,
            sandbox_key=sandbox,
            pid=winner.pid,
            started_at=winner.started_at,
            warnings=_duplicate_warning(label, [facts for facts, _ in candidates]),
        )
    return chosen, tuple(problems)


def container_id_of(event: Mapping[str, object]) -> str | None:
    """The container a Docker event is about, if it names one."""
    actor = event.get("Actor")
    if isinstance(actor, Mapping):
        actor_id = actor.get("ID")
        if isinstance(actor_id, str) and actor_id:
            return actor_id
    legacy = event.get("id")
    return legacy if isinstance(legacy, str) and legacy else None


# ---------------------------------------------------------------- shell part

def _unreachable() -> tuple[type[BaseException], ...]:
    import docker.errors
    import requests

    return (docker.errors.DockerException, requests.exceptions.RequestException, OSError)


def tls_from_env(environ: Mapping[str, str] | None = None) -> Any:
    """The TLS settings of $DOCKER_TLS_VERIFY and $DOCKER_CERT_PATH, as docker.from_env()
    reads them (None: plain). Raises ValueError naming the variable for unusable files."""
    if not environ:  # as kwargs_from_env takes it
        environ = os.environ
    if not environ.get("DOCKER_CERT_PATH") and not environ.get("DOCKER_TLS_VERIFY"):
        return None  # as kwargs_from_env decides it, without importing the SDK
    import docker.errors
    import docker.utils

    try:
        return docker.utils.kwargs_from_env(environment=environ).get("tls")
    except docker.errors.TLSParameterError as err:
        raise ValueError(f"$DOCKER_CERT_PATH / $DOCKER_TLS_VERIFY: {err}") from None


class MicroserviceWatcher:
    """Follows Docker on one background thread and posts `MicroservicesChanged`.

    When Docker is unreachable it posts `connected=False` with the last known map, so
    nothing already applied is torn down; it retries with exponential backoff and lists
    everything again after each reconnect, because events may have been lost.
    """

    def __init__(
        self,
        base_url: str,
        post: Callable[[Event], None],
        *,
        backoff_max: float = 10.0,
    ) -> None:
        self._url = base_url
        self._post = post
        self._backoff_max = backoff_max
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._stream: Any = None
        self._thread: threading.Thread | None = None
        self._running: dict[str, ContainerFacts] = {}
        self._last: MicroservicesChanged | None = None
        self._problems: set[str] = set()
        self._connected = False
        self._tls = tls_from_env()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("MicroserviceWatcher.start() called twice; create a new watcher")
        self._thread = threading.Thread(target=self._run, name="docker-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._close_stream()
        if self._thread is not None:
            self._thread.join(timeout=10.0)

    def _run(self) -> None:
        delay = FIRST_RETRY_DELAY
        unreachable = _unreachable()
        while not self._stopping.is_set():
            self._connected = False
            try:
                self._session()
                problem = "the event stream ended"
            except unreachable as exc:
                problem = str(exc) or type(exc).__name__
            except Exception as exc:  # keep watching whatever the SDK raises
                log.exception("docker watch: unexpected error from %s", self._url)
                problem = f"unexpected error: {exc!r}"
            if self._stopping.is_set():
                break
            if self._connected:
                delay = FIRST_RETRY_DELAY
            self._publish(connected=False, reason=f"Docker unreachable at {self._url}: {problem}")
            log.warning(
                "Docker unreachable at %s: %s; retrying in %.1f s", self._url, problem, delay
            )
            self._stopping.wait(delay)
            delay = min(delay * 2, self._backoff_max)

    def _session(self) -> None:
        """Connect, list, then follow events until the stream ends."""
        import docker

        client: Any = docker.DockerClient(base_url=self._url, tls=self._tls,
                                          timeout=REQUEST_TIMEOUT)
        try:
            since = int(time.time())
            self._running = self._list_running(client)
            self._connected = True
            self._publish(connected=True, reason="")
            for event in self._open_events(client, since):
                container_id = container_id_of(event) if isinstance(event, Mapping) else None
                if container_id is not None:
                    self._refresh(client, container_id)
                    self._publish(connected=True, reason="")
        finally:
            self._close_stream()
            client.close()

    def _open_events(self, client: Any, since: int) -> Iterator[Any]:
        stream = client.api.events(since=since, filters=dict(EVENT_FILTERS), decode=True)
        with self._lock:
            self._stream = stream
        if self._stopping.is_set():
            self._close_stream()
        return iter(stream)

    def _close_stream(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except (OSError, AttributeError) as exc:
                log.debug("docker watch: closing the event stream: %s", exc)

    def _list_running(self, client: Any) -> dict[str, ContainerFacts]:
        running: dict[str, ContainerFacts] = {}
        for summary in client.api.containers(filters={"status": "running"}):
            facts = self._inspect(client, str(summary["Id"]))
            if facts is not None:
                running[facts.container_id] = facts
        return running

    def _refresh(self, client: Any, container_id: str) -> None:
        facts = self._inspect(client, container_id)
        if facts is None:
            self._running.pop(container_id, None)
        else:
            self._running[container_id] = facts

    def _inspect(self, client: Any, container_id: str) -> ContainerFacts | None:
        import docker.errors

        try:
            doc = client.api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        try:
            return facts_from_inspect(doc)
        except MalformedInspect as exc:
            log.error("docker watch: ignoring %s", exc)
            return None

    def _publish(self, *, connected: bool, reason: str) -> None:
        running, problems = choose_microservices(self._running.values())
        for problem in set(problems) - self._problems:
            log.warning("docker watch: %s", problem)
        self._problems = set(problems)
        if not connected and self._last is not None:
            running = dict(self._last.running)
        event = MicroservicesChanged(running=running, connected=connected, reason=reason)
        if event == self._last or (
            not connected and self._last is not None and not self._last.connected
        ):
            return
        self._last = event
        self._post(event)
