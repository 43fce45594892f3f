"""etcd clients made from `EtcdOptions`: TLS, user/password, and failover across members.

`ClientFactory.connect()` returns an etcd3 client that starts at the member this process
last found working, skips members that failed a moment ago, and re-authenticates when a
member no longer knows its token. The etcd3 library gives no types; `Any` stays here.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

import etcd3
import etcd3.exceptions
import grpc
from etcd3 import etcdrpc
from etcd3.client import Endpoint as MemberChannel
from etcd3.client import EtcdTokenCallCredentials

from controller.etcd_options import Endpoint, EtcdOptions

log = logging.getLogger(__name__)

RECEIVE_LIMIT = ("grpc.max_receive_message_length", -1)
"""No limit to one etcd response (gRPC's default is 4 MiB): the status keys are listed in
one Range request, and 10,000 of them with their counters are more than that."""
FAILED_MEMBER_S = 3.0
"""A member that failed is tried again only after this long (or when all others failed)."""
_MEMBER_DOWN = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.INTERNAL)


class EtcdUnreachable(Exception):
    """No member answered; the message names every endpoint tried, on one line."""


class EtcdAuthFailed(Exception):
    """etcd refused the user name or password."""


class ClientFactory:
    """Makes clients for one set of options and remembers which members failed.

    Shared by every etcd user of a process (watch, statuses, liveness), so they move to
    the next member together, and a new client does not start on a member known dead.
    """

    def __init__(self, options: EtcdOptions, timeout: float = 10.0,
                 rng: random.Random | None = None) -> None:
        self.options = options
        self.timeout = timeout
        self._lock = threading.Lock()
        self._preferred = (rng or random.Random()).randrange(len(options.endpoints))
        self._failed_at: dict[Endpoint, float] = {}
        self.in_use: Endpoint | None = None
        self.token: str | None = None
        """The auth token every client of this process shares: one password check (bcrypt in
        etcd, the costliest request of a restart) per process, not per client."""
        self.authentications = 0
        self.auth_lock = threading.Lock()

    def describe(self) -> str:
        return self.options.describe()

    def connect(self, grpc_options: list[tuple[str, int]] | None = None) -> FailoverClient:
        """A client whose first member is the one most likely to answer."""
        return FailoverClient(self, self._ordered(), grpc_options or [])

    def _ordered(self) -> list[Endpoint]:
        now = time.monotonic()
        with self._lock:
            endpoints = self.options.endpoints
            rotated = endpoints[self._preferred:] + endpoints[:self._preferred]
            healthy = [e for e in rotated if now - self._failed_at.get(e, -1e9) > FAILED_MEMBER_S]
            return healthy + [e for e in rotated if e not in healthy]

    def member_failed(self, endpoint: Endpoint) -> None:
        with self._lock:
            self._failed_at[endpoint] = time.monotonic()
            if self.options.endpoints[self._preferred] == endpoint:
                self._preferred = (self._preferred + 1) % len(self.options.endpoints)
            if self.in_use == endpoint:
                self.in_use = None

    def member_answered(self, endpoint: Endpoint) -> None:
        with self._lock:
            self._failed_at.pop(endpoint, None)
            self._preferred = self.options.endpoints.index(endpoint)
            self.in_use = endpoint

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials, read from the files at each connect (certificates rotate)."""
        if not self.options.tls:
            return None
        return grpc.ssl_channel_credentials(
            _read(self.options.cacert), _read(self.options.key), _read(self.options.cert))


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as handle:
        return handle.read()


class FailoverClient(etcd3.MultiEndpointEtcd3Client):  # type: ignore[misc]
    """An etcd3 client over several members that moves on when the one in use fails.

    Like etcd3's, a failed call is not retried: it raises, and the caller's next call goes
    to the next member.
    """

    def __init__(self, factory: ClientFactory, order: list[Endpoint],
                 grpc_options: list[tuple[str, int]]) -> None:
        self.factory = factory
        self._by_netloc = {e.netloc: e for e in order}
        credentials = factory.credentials()
        members = [MemberChannel(e.host, e.port, secure=e.tls, creds=credentials,
                                         time_retry=FAILED_MEMBER_S,
                                         opts=[RECEIVE_LIMIT, *grpc_options])
                   for e in order]
        super().__init__(endpoints=members, timeout=factory.timeout, failover=True)
        self._current_endpoint_label = order[0].netloc
        self.last_failure = ""
        self._user = factory.options.user
        self._password = factory.options.password
        self._token: str | None = None
        if self._user is not None:
            self.authenticate(stale=None)

    @property
    def member(self) -> Endpoint:
        """The member this client sends its next call to."""
        return self._by_netloc[self._current_endpoint_label]

    def authenticate(self, stale: str | None = None) -> None:
        """Use the factory's token, or get one from the first member that answers when it
        has none or it is `stale` (refused: etcd 3.4's simple tokens expire after
        `--auth-token-ttl` idle on a member). Clients starting together wait for one
        password check instead of each making its own."""
        with self.factory.auth_lock:
            token = self.factory.token
            if token is not None and token != stale:
                self._use_token(token)
                return
            self._authenticate()

    def _authenticate(self) -> None:
        tried: list[str] = []
        while True:
            try:
                channel = self.channel
            except etcd3.exceptions.NoServerAvailableError:
                raise self.unreachable(tried) from None
            endpoint = self.member
            try:
                reply = etcdrpc.AuthStub(channel).Authenticate(
                    etcdrpc.AuthenticateRequest(name=self._user, password=self._password),
                    self.timeout)
            except grpc.RpcError as err:
                if err.code() not in _MEMBER_DOWN:
                    raise EtcdAuthFailed(f"etcd at {endpoint.url} refused user {self._user!r}: "
                                         f"{err.details()}") from None
                tried.append(f"{endpoint.url} ({_describe(err)})")
                self.endpoint_in_use.fail()
                self.factory.member_failed(endpoint)
                continue
            self.factory.member_answered(endpoint)
            self.factory.token = reply.token
            self.factory.authentications += 1
            self._use_token(reply.token)
            return

    def _use_token(self, token: str) -> None:
        self._token = token
        self.metadata = (("token", token),)
        self.call_credentials = grpc.metadata_call_credentials(EtcdTokenCallCredentials(token))
        self._stubs.clear()

    def unreachable(self, tried: list[str] | None = None) -> EtcdUnreachable:
        detail = "; ".join(tried) if tried else self.factory.describe()
        return EtcdUnreachable(f"cannot reach etcd (tried {detail})")

    def call_failed(self, err: grpc.RpcError) -> None:
        """Records a failed call made outside the etcd3 wrappers (a watch or lease stream)."""
        code = err.code() if isinstance(err, grpc.Call) else None
        if code in _MEMBER_DOWN:
            self.last_failure = f"{self.member.url} ({_describe(err)})"
            self.endpoint_in_use.fail()
            self.factory.member_failed(self.member)
        elif self._user is not None and (code == grpc.StatusCode.UNAUTHENTICATED or (
                code == grpc.StatusCode.INVALID_ARGUMENT and "auth" in (err.details() or ""))):
            self.authenticate(stale=self._token)  # expired, or older than the auth store

    def token_refused(self) -> None:
        """etcd refused this client's token (it expired, or the member restarted and lost
        its simple tokens): log in again, once for every client of the process."""
        if self._user is not None:
            self.authenticate(stale=self._token)

    def call_answered(self) -> None:
        self.factory.member_answered(self.member)

    def _manage_grpc_errors(self, exc: grpc.RpcError) -> None:
        self.call_failed(exc)
        super()._manage_grpc_errors(exc)


def _describe(err: object) -> str:
    if isinstance(err, grpc.Call):
        details = (err.details() or "").splitlines()
        return f"{err.code().name}: {details[0] if details else ''}".rstrip(": ")
    return str(err) or type(err).__name__


describe_error = _describe


def probe(client: FailoverClient) -> None:
    """One cheap request, moving across members until one answers, else EtcdUnreachable."""
    tried: list[str] = []
    for _ in client.factory.options.endpoints:
        try:
            client.status()  # Maintenance.Status: any user may call it, even a least-privileged one
            client.call_answered()
            return
        except etcd3.exceptions.NoServerAvailableError:
            break
        except (etcd3.exceptions.ConnectionFailedError,
                etcd3.exceptions.ConnectionTimeoutError,
                etcd3.exceptions.InternalServerError):
            tried.append(client.last_failure)
    raise client.unreachable(tried)


def connected_client(factory: ClientFactory) -> Any:
    """A client that has answered one request (for one-shot commands such as netagent-ctl)."""
    client = factory.connect()
    try:
        probe(client)
    except BaseException:
        client.close()
        raise
    return client
