"""A real 3-member etcd 3.4 cluster on loopback with TLS (certificates made here) and auth.

`TlsCluster.start()` makes a CA, one server certificate for every member and client
certificates on demand (`client_cert(name)`), starts the members, creates `root` and
enables auth. Members can be killed (SIGKILL) and started again on the same ports and data.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controller.etcd_client import ClientFactory
from controller.etcd_options import Endpoint, EtcdOptions
from tests.harness import free_port, wait_until

ETCD = "/usr/bin/etcd"


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


class CertificateAuthority:
    """A CA that signs server and client certificates into `directory` (files 0644: the
    unprivileged controller reads them; fine for a test)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "netagent test CA")])
        self._name = name
        self._cert = (self._builder(name, self._key.public_key())
                      .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                      .sign(self._key, hashes.SHA256()))
        self.ca_file = directory / "ca.crt"
        self.ca_file.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self.ca_file.chmod(0o644)

    def _builder(self, subject: x509.Name, public_key: Any) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        issuer = getattr(self, "_name", subject)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1)))

    def issue(self, name: str, server: bool) -> CertFiles:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = self._builder(subject, key.public_key())
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
            ]), critical=False)
        cert = (builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                .sign(self._key, hashes.SHA256()))
        files = CertFiles(self.directory / f"{name}.crt", self.directory / f"{name}.key")
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
        files.cert.chmod(0o644)
        files.key.chmod(0o644)
        return files


class Member:
    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.port = free_port()
        self.peer_port = free_port()
        self.metrics_port = free_port()
        self.directory = directory
        self.log_path = directory / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.command: list[str] = []

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port, tls=True)

    @property
    def url(self) -> str:
        return self.endpoint.url

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class TlsCluster:
    """Three members, client TLS with client certificates required, auth on (`root`)."""

    def __init__(self, size: int = 3, heartbeat_ms: int = 200,
                 election_ms: int = 2000, progress_notify: str = "2s") -> None:
        """Heartbeat and election timeout are twice etcd's defaults: a CI machine running
        other tests starves members long enough to start needless elections."""
        self.progress_notify = progress_notify
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.directory = Path(tempfile.mkdtemp(prefix="netagent-fleet-"))
        self.directory.chmod(0o711)
        self.ca = CertificateAuthority(self.directory)
        self.members = [Member(f"m{i}", self.directory) for i in range(size)]
        self.root_password = secrets.token_hex(8)
        self._server = self.ca.issue("server", server=True)
        self._root = self.ca.issue("root", server=False)

    @property
    def endpoints(self) -> str:
        return ",".join(m.url for m in self.members)

    def start(self) -> TlsCluster:
        peers = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)
        for member in self.members:
            member.command = [
                ETCD, "--name", member.name, "--data-dir", str(self.directory / member.name),
                "--listen-client-urls", member.url, "--advertise-client-urls", member.url,
                "--listen-peer-urls", f"http://127.0.0.1:{member.peer_port}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{member.peer_port}",
                "--initial-cluster", peers, "--initial-cluster-state", "new",
                "--initial-cluster-token", self.directory.name,
                "--cert-file", str(self._server.cert), "--key-file", str(self._server.key),
                "--trusted-ca-file", str(self.ca.ca_file), "--client-cert-auth",
                "--experimental-watch-progress-notify-interval", self.progress_notify,
                "--heartbeat-interval", str(self.heartbeat_ms),
                "--election-timeout", str(self.election_ms),
                "--listen-metrics-urls", f"http://127.0.0.1:{member.metrics_port}",
            ]
            member.start()
        wait_until(self.healthy, timeout=60, what="the etcd cluster to elect a leader",
                   describe=self.log_tails)
        self._enable_auth()
        return self

    def options(self, user: str | None = None, password: str | None = None,
                cert: CertFiles | None = None) -> EtcdOptions:
        cert = cert or self._root
        return EtcdOptions(endpoints=tuple(m.endpoint for m in self.members),
                           cacert=str(self.ca.ca_file), cert=str(cert.cert), key=str(cert.key),
                           user=user, password=password)

    def root_client(self) -> Any:
        """A client authenticated as root (close it when done)."""
        return ClientFactory(self.options("root", self.root_password)).connect()

    def root_args(self) -> list[str]:
        """netagent-ctl flags for root; the password goes through a file."""
        password = self.directory / "root.password"
        password.write_text(self.root_password + "\n")
        return ["--endpoints", self.endpoints, "--cacert", str(self.ca.ca_file),
                "--cert", str(self._root.cert), "--key", str(self._root.key),
                "--user", "root", "--password-file", str(password)]

    def _enable_auth(self) -> None:
        from etcd3 import etcdrpc

        client = ClientFactory(self.options()).connect()
        try:
            auth = etcdrpc.AuthStub(client.channel)
            auth.UserAdd(etcdrpc.AuthUserAddRequest(name="root", password=self.root_password),
                         10)
            auth.UserGrantRole(etcdrpc.AuthUserGrantRoleRequest(user="root", role="root"), 10)
            auth.AuthEnable(etcdrpc.AuthEnableRequest(), 10)
        finally:
            client.close()

    def add_user(self, name: str, password: str, client: Any = None) -> None:
        """Adds an etcd user (as root; `client` reuses a root client)."""
        from etcd3 import etcdrpc

        root = client or self.root_client()
        try:
            etcdrpc.AuthStub(root.channel).UserAdd(
                etcdrpc.AuthUserAddRequest(name=name, password=password), 30,
                credentials=root.call_credentials, metadata=root.metadata)
        finally:
            if client is None:
                root.close()

    def _status(self, member: Member) -> Any:
        from etcd3 import etcdrpc

        options = EtcdOptions(endpoints=(member.endpoint,), cacert=str(self.ca.ca_file),
                              cert=str(self._root.cert), key=str(self._root.key))
        client = ClientFactory(options, timeout=2).connect()
        try:
            return etcdrpc.MaintenanceStub(client.channel).Status(etcdrpc.StatusRequest(), 2)
        finally:
            client.close()

    def healthy(self) -> bool:
        """Every running member answers and knows a leader."""
        try:
            return all(self._status(m).leader != 0 for m in self.members if m.alive())
        except Exception:
            return False

    def leader(self) -> Member:
        ids = {}
        leader_id = 0
        for member in self.members:
            if member.alive():
                status = self._status(member)
                ids[status.header.member_id] = member
                leader_id = status.leader
        return ids[leader_id]

    def metrics(self) -> dict[str, float]:
        """Prometheus samples summed over the running members: `name{labels}` -> value."""
        import urllib.request

        totals: dict[str, float] = {}
        for member in self.members:
            if not member.alive():
                continue
            url = f"http://127.0.0.1:{member.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as reply:
                for line in reply.read().decode().splitlines():
                    if line and not line.startswith("#"):
                        name, _sep, value = line.rpartition(" ")
                        totals[name] = totals.get(name, 0.0) + float(value)
        return totals

    def member_at(self, url: str) -> Member:
        return next(m for m in self.members if m.url == url)

    def log_tails(self) -> str:
        parts = []
        for member in self.members:
            try:
                tail = member.log_path.read_text(errors="replace").splitlines()[-15:]
            except OSError:
                tail = []
            parts.append(f"--- {member.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def stop(self) -> None:
        for member in self.members:
            member.kill()
        shutil.rmtree(self.directory, ignore_errors=True)
