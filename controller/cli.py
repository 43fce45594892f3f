"""`netagent-controller run`: wires etcd, Docker, the helper client and the agent loop."""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import queue
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

import netagent_log
from controller import __version__, config_file, etcd_options, keys
from controller.etcd_options import EtcdOptions
from controller.events import Event, MicroservicesChanged, Stop

log = logging.getLogger("netagent.controller")

DEFAULT_DOCKER = "unix:///var/run/docker.sock"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_DECISION_WAIT_S = 2.0
"""At most this long, a restart on a recorded state waits for the decision whether it is
converged as left before making its agent (the agent waits as long for it anyway)."""
_LEGACY_KEYS = ("etcd",)
"""[controller] keys kept for old files: `etcd` is `[etcd] endpoints`."""
_DEFAULTS: dict[str, object] = {
    "label": os.environ.get("MICROSERVICE_LABEL") or "vpp1",
    "socket": "/run/netagent/netlinkd.sock",
    "signing_key": "/etc/netagent/controller.key",
    "docker": None,
    "no_docker": False,
    "resync_interval": 30.0,
    "stats_interval": 10.0,
    "log_level": "INFO",
    "log_format": "text",
    "metrics_address": None,
    "liveness_ttl": 10,
    "state_dir": None,
}


class Watcher(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


WatcherFactory = Callable[[str, Callable[[Event], None]], Watcher]


class UsageError(Exception):
    """A bad option value; the message names the option."""


@dataclass(frozen=True)
class RunOptions:
    etcd: EtcdOptions
    label: str
    socket: str
    signing_key: str
    docker: str | None
    use_docker: bool
    resync_interval: float
    log_level: str
    log_format: str = "text"
    metrics_address: tuple[str, int] | None = None
    stats_interval: float = 10.0
    liveness_ttl: int = 10
    state_dir: str | None = None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netagent-controller")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="watch etcd and Docker, drive netlinkd")
    run.add_argument("--label", help="agent label (default $MICROSERVICE_LABEL or vpp1)")
    run.add_argument("--socket", metavar="PATH",
                     help=f"netlinkd Unix socket path (default {_DEFAULTS['socket']})")
    run.add_argument("--signing-key", metavar="FILE",
                     help="Ed25519 PKCS#8 PEM private key, mode 0600 "
                          f"(default {_DEFAULTS['signing_key']})")
    docker = run.add_mutually_exclusive_group()
    docker.add_argument("--docker", metavar="URL",
                        help=f"Docker API URL (default $DOCKER_HOST, else {DEFAULT_DOCKER} "
                             "if present; $DOCKER_TLS_VERIFY and $DOCKER_CERT_PATH apply)")
    docker.add_argument("--no-docker", action="store_true", default=None,
                        help="do not watch Docker (microservice namespaces stay pending)")
    run.add_argument("--resync-interval", type=float, metavar="SECONDS",
                     help="seconds between full drift checks (default 30); link events "
                          "from netlinkd repair drift in between")
    run.add_argument("--stats-interval", type=float, metavar="SECONDS",
                     help="seconds between interface statistics in the status keys "
                          "(default 10; 0 turns them off)")
    run.add_argument("--config", metavar="FILE",
                     help=f"TOML config file (default {config_file.DEFAULT_PATH})")
    run.add_argument("--log-level", choices=LOG_LEVELS, type=str.upper,
                     help="in any case (default INFO)")
    run.add_argument("--log-format", choices=netagent_log.FORMATS,
                     help="text: one key=value line per event (no timestamp under journald); "
                          "json: one JSON object per line (default text)")
    run.add_argument("--liveness-ttl", type=int, metavar="SECONDS",
                     help="lease of the liveness key: it vanishes this long after the "
                          "controller dies; renewed every third of it (default 10)")
    run.add_argument("--metrics-address", metavar="HOST:PORT",
                     help="serve /healthz, /readyz and Prometheus /metrics on this loopback "
                          "address (default off)")
    run.add_argument("--state-dir", metavar="DIR",
                     help="where the controller records its last converged state, so that a "
                          "restart finding it unchanged is ready at once (default: none)")
    etcd_options.add_arguments(run)
    return parser


def resolve_options(args: argparse.Namespace) -> RunOptions:
    """Flags override the `[controller]` table, which overrides the defaults."""
    from_file = config_file.load_section(args.config, "controller")
    unknown = sorted(set(from_file) - set(_DEFAULTS) - set(_LEGACY_KEYS))
    if unknown:
        raise UsageError(f"config file: unknown [controller] keys {unknown}; "
                         f"known keys are {sorted(_DEFAULTS)}")
    etcd_table = config_file.load_section(args.config, "etcd")
    if "etcd" in from_file:
        if "endpoints" in etcd_table:
            raise UsageError("config file: [controller] etcd and [etcd] endpoints are both "
                             "set; keep [etcd] endpoints")
        etcd_table["endpoints"] = from_file.pop("etcd")
    if from_file.get("docker") is not None and from_file.get("no_docker") is True:
        raise UsageError("config file: [controller] sets both docker and no_docker = true; "
                         "delete no_docker to follow Docker, or docker to leave it off")
    merged = dict(_DEFAULTS)
    merged.update(from_file)
    flags = {k: v for k, v in vars(args).items() if k in _DEFAULTS and v is not None}
    if flags.get("docker") is not None:
        merged["no_docker"] = False
    merged.update(flags)
    return _typed(merged, etcd_options.resolve(args, etcd_table, file_name="config file"))


def _typed(merged: dict[str, object], etcd: EtcdOptions) -> RunOptions:
    def text(key: str) -> str:
        value = merged[key]
        if not isinstance(value, str) or not value:
            raise UsageError(f"option {key.replace('_', '-')}: expected a non-empty string")
        return value

    interval = merged["resync_interval"]
    if not isinstance(interval, int | float) or interval <= 0:
        raise UsageError("option resync-interval: expected a positive number of seconds")
    stats = merged["stats_interval"]
    if not isinstance(stats, int | float) or isinstance(stats, bool) or stats < 0:
        raise UsageError("option stats-interval: expected 0 (off) or a positive number of "
                         "seconds")
    docker = merged["docker"]
    if docker is not None and not isinstance(docker, str):
        raise UsageError("option docker: expected a URL such as unix:///var/run/docker.sock")
    no_docker = merged["no_docker"]
    if not isinstance(no_docker, bool):
        raise UsageError("option no-docker: expected true or false (a TOML boolean, unquoted)")
    log_level = text("log_level").upper()
    if log_level not in LOG_LEVELS:
        raise UsageError(f"option log-level: {merged['log_level']!r} is not one of "
                         f"{', '.join(LOG_LEVELS)}")
    log_format = text("log_format")
    if log_format not in netagent_log.FORMATS:
        raise UsageError(f"option log-format: {log_format!r} is not one of "
                         f"{', '.join(netagent_log.FORMATS)}")
    keys.config_prefix(text("label"))
    metrics = None if merged["metrics_address"] is None else text("metrics_address")
    ttl = merged["liveness_ttl"]
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 2 <= ttl <= 3600:
        raise UsageError("option liveness-ttl: expected whole seconds from 2 to 3600")

    state_dir = None if merged["state_dir"] is None else text("state_dir")
    return RunOptions(etcd=etcd, label=text("label"), socket=text("socket"),
                      signing_key=text("signing_key"), docker=docker,
                      use_docker=not no_docker,
                      resync_interval=float(interval), log_level=log_level,
                      log_format=log_format, stats_interval=float(stats),
                      metrics_address=_metrics_address(metrics) if metrics else None,
                      liveness_ttl=ttl, state_dir=state_dir)


def _metrics_address(value: str) -> tuple[str, int]:
    from controller.metrics import parse_address  # http.server and more: only when asked

    return parse_address(value)


def version() -> str:
    return __version__


def docker_url(options: RunOptions, environ: Mapping[str, str] = os.environ) -> str | None:
    """--docker, else $DOCKER_HOST (as `docker` and docker.from_env() use it), else the
    default socket when it exists. TLS ($DOCKER_TLS_VERIFY, $DOCKER_CERT_PATH) is read by
    the watcher, as docker.from_env() reads it."""
    if not options.use_docker:
        return None
    if options.docker:
        return options.docker
    if environ.get("DOCKER_HOST"):
        return environ["DOCKER_HOST"]
    return DEFAULT_DOCKER if os.path.exists(DEFAULT_DOCKER.removeprefix("unix://")) else None


def load_docker_factory() -> WatcherFactory | None:
    try:
        module = importlib.import_module("controller.docker_watch")
        factory: WatcherFactory = module.MicroserviceWatcher
    except (ImportError, AttributeError) as err:
        log.warning("Docker support unavailable (%s); microservice namespaces stay pending", err)
        return None
    return factory


def run(options: RunOptions, docker_factory: WatcherFactory | None = None) -> int:
    """Starts what READY=1 waits for (etcd's listing, the helper's link events, the status
    keys) first; the agent, the liveness key and Docker follow once a restart on a
    recorded state is decided (`Resume.wait_decided`: at once without a record). The
    agent waits for that decision before its first batch in any case, so a restart's
    READY=1 no longer waits for their imports (docs/PERFORMANCE.md, "Resync")."""
    from controller.lean_imports import import_lean

    import_lean()
    from controller.etcd_client import ClientFactory
    from controller.etcd_watch import EtcdWatcher
    from controller.health import Health, MonitoredHelper, docker_reporting
    from controller.helper_client import HelperClient
    from controller.helper_events import HelperEvents
    from controller.resume import Resume
    from controller.signer import Signer, load_signing_key
    from controller.status import StatusPublisher

    signer = Signer(load_signing_key(options.signing_key))
    etcd = ClientFactory(options.etcd)
    publisher = StatusPublisher(etcd.connect, options.label)
    helper = HelperClient(options.socket)
    resume = Resume(options.state_dir, options.label, publisher.listed)
    health = Health()
    metrics = _metrics(options, health)
    if metrics is not None:
        from controller.metrics import Endpoints, timing
        from controller.metrics import StatusSink as metrics_sink
    inbox: queue.Queue[Event] = queue.Queue()
    post = inbox.put
    prefix = keys.config_prefix(options.label)
    watchers: list[Watcher] = [
        EtcdWatcher(etcd, options.label, timing(post, metrics) if metrics else post,
                    on_state=lambda up, detail: health.set("etcd", up, detail),
                    parse=lambda name, raw: _parse_config(prefix, name, raw),
                    on_listing=resume.config_listed),
        HelperEvents(helper, options.label, post, signer.watch_request,
                     on_first=resume.helper_said),
    ]
    url = docker_url(options)
    later: list[Watcher] = []  # started once READY=1 is decided; made now, to fail before it
    if metrics is not None and options.metrics_address is not None:
        try:
            later.append(Endpoints(options.metrics_address, metrics, health))
        except OSError as err:
            log.error("--metrics-address %s:%d: %s", *options.metrics_address, err.strerror)
            return 2
    factory = docker_factory or (load_docker_factory() if url else None)
    if url and factory:
        try:
            later.append(factory(url, docker_reporting(post, health)))
        except ValueError as err:
            log.error("Docker at %s: %s", url, err)
            return 2
    else:
        health.set("docker", None, "not watched")
        post(MicroservicesChanged(
            {}, connected=False,
            reason="Docker is not watched (no_docker, or neither --docker, $DOCKER_HOST "
                   f"nor {DEFAULT_DOCKER} was found)"))
    _install_signal_handlers(lambda reason: post(Stop(reason)))
    log.info("controller for label %s: etcd %s, helper %s, docker %s, key id %s",
             options.label, etcd.describe(), options.socket, url or "off", signer.key_id)
    started: list[Watcher] = []
    try:
        resume.start()
        for watcher in watchers:
            watcher.start()
            started.append(watcher)
        resume.wait_decided(_DECISION_WAIT_S)
        from controller import live_status
        from controller.agent import Agent
        from controller.liveness import LivenessKeeper

        agent = Agent(options.label,
                      MonitoredHelper(helper, health, metrics.batch if metrics else None),
                      signer, metrics_sink(publisher, metrics) if metrics else publisher,
                      config_prefix=prefix, resync_interval=options.resync_interval,
                      stats_interval=options.stats_interval, settle_s=live_status.SETTLE_S,
                      resume=resume, inbox=inbox)
        later.insert(0, LivenessKeeper(etcd, options.label, health, ttl=options.liveness_ttl))
        for watcher in later:
            watcher.start()
            started.append(watcher)
        gc.enable()
        agent.run()
    finally:
        for watcher in reversed(started):
            watcher.stop()
        helper.close()
        publisher.close()
    return 0


def _parse_config(prefix: str, name: str, raw: bytes) -> object:
    from controller.model import parse_config  # not before READY=1 unless a key needs it

    return parse_config(prefix, name, raw)


def _metrics(options: RunOptions, health: Any) -> Any:
    """The metrics, when --metrics-address asks for them (prometheus_client loads only then)."""
    if options.metrics_address is None:
        return None
    from controller.metrics import Metrics

    return Metrics(health)


def _install_signal_handlers(stop: Callable[[str], None]) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def main(argv: Sequence[str] | None = None) -> int:
    # Start-up makes some 50,000 objects the cyclic collector tracks, nearly all of them
    # kept (modules, classes, functions): its 50 or so passes over them were 5 to 10% of
    # the CPU a restart spends before READY=1. On again before the agent's loop (`run`).
    gc.disable()
    try:
        return _main(argv)
    finally:
        gc.enable()


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        options = resolve_options(args)
    except (UsageError, ValueError, config_file.ConfigFileError) as err:
        print(f"netagent-controller: {err}", file=sys.stderr)
        return 2
    netagent_log.setup(options.log_level, options.log_format)
    from controller.signer import SigningKeyError

    try:
        return run(options)
    except SigningKeyError as err:
        log.error("%s", err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
