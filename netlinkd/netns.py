"""Network namespaces: resolve a `NamespaceRef` to a checked fd, open netlink sockets
inside a namespace, create and remove named namespaces like `ip netns add`.

`setns`/`unshare` only ever run on the namespace thread, which does nothing else and goes
back to the helper's namespace after each job. The netlink sockets it makes are used on
the caller's (executor) thread.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import socket
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from netagent_api import helper_pb2
from netlinkd.errors import KernelError, NamespaceGone, PolicyRefused
from netlinkd.mountguard import CLONE_NEWNET, MNT_DETACH, MS_BIND, MS_REC, MS_SHARED
from netlinkd.policy import NAMED_NETNS_DIR, Policy, canonical_ns_path, named_ns_path
from netlinkd.rtnl import Rtnl

NETNS_RUN_DIR = NAMED_NETNS_DIR
NSFS_MAGIC = 0x6E736673
NS_GET_NSTYPE = 0xB703
NETLINK_ROUTE = 0
_STATFS_BUF = 256
# Out of descriptors or memory is the helper's own trouble, not a verdict on the path:
# a KernelError (retriable), never a PolicyRefused.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})
# Netlink sockets (about 4 fds each) kept for namespaces not used by the running batch.
MAX_CACHED_NAMESPACES = 64

log = logging.getLogger(__name__)
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")
_SWITCHER: list[tuple[ThreadPoolExecutor, int]] = []  # the namespace thread, the way home
_SWITCHER_LOCK = threading.Lock()


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str, target: str, fstype: str, flags: int) -> None:
    result = _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, None)
    _check(result, f"mount {target}")


def on_namespace_thread(work: Callable[[], T]) -> T:
    """Run `work` on the namespace thread, which goes back to the helper's namespace after
    each job; return its result or re-raise. One thread kept for this: starting one per
    socket cost 0.06 to 0.09 ms, a job on this one 0.02 to 0.04 ms."""
    with _SWITCHER_LOCK:  # one job at a time: none is left queued on a thread that quit
        if not _SWITCHER:
            home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            _SWITCHER.append((ThreadPoolExecutor(1, "netns-switch"), home))
        return _SWITCHER[0][0].submit(_and_back, work, _SWITCHER[0][1]).result()


def _and_back(work: Callable[[], T], home: int) -> T:
    try:
        return work()
    finally:
        if _libc.setns(home, CLONE_NEWNET) != 0:  # so no namespace is held while it waits
            _SWITCHER.pop()[0].shutdown(wait=False)  # its thread exits after this job
            os.close(home)


@dataclass
class NsHandle:
    """An open, verified network-namespace file."""

    fd: int
    path: str
    dev: int
    inode: int

    @property
    def key(self) -> tuple[int, int]:
        return (self.dev, self.inode)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _fstatfs_type(fd: int) -> int:
    buf = ctypes.create_string_buffer(_STATFS_BUF)
    _check(_libc.fstatfs(fd, buf), "fstatfs")
    return ctypes.c_long.from_buffer(buf).value


def _verify_netns_fd(fd: int, path: str, size: int) -> None:
    if _fstatfs_type(fd) != NSFS_MAGIC:
        if size == 0:
            # What a namespace's mount point is once the namespace is unmounted: a stopped
            # container's SandboxKey, or `ip netns delete` cut short.
            raise NamespaceGone(f"{path} is an empty file, no longer a mounted namespace")
        raise PolicyRefused(f"{path} is not a namespace file (nsfs); refusing to use it")
    try:
        nstype = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError as exc:
        raise PolicyRefused(f"{path}: cannot query namespace type: {exc.strerror}") from exc
    if nstype != CLONE_NEWNET:
        raise PolicyRefused(f"{path} is a namespace but not a network namespace")


def _is_empty_file(path: str) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size == 0


def open_ns_file(path: str, *, follow: bool = False) -> NsHandle:
    """Open `path` read-only and prove it is a network namespace; never blocks on a FIFO."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise NamespaceGone(f"namespace {path} does not exist") from exc
    except OSError as exc:
        if exc.errno in RESOURCE_ERRNOS:
            raise KernelError(f"cannot open {path}: {exc.strerror}; retry") from exc
        if exc.errno == errno.EACCES and _is_empty_file(path):
            # `ip netns add` makes the mount point with mode 0: once unmounted (deleted, or
            # being deleted) the helper, without CAP_DAC_OVERRIDE, cannot even open it.
            raise NamespaceGone(f"{path} is an empty file, no longer a mounted namespace") from exc
        raise PolicyRefused(f"cannot open {path} as a namespace: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PolicyRefused(f"{path} is not a namespace file; refusing to use it")
        _verify_netns_fd(fd, path, info.st_size)
    except BaseException:
        os.close(fd)
        raise
    return NsHandle(fd, path, info.st_dev, info.st_ino)


def host_handle() -> NsHandle:
    return open_ns_file("/proc/self/ns/net", follow=True)


def open_ref(policy: Policy, ref: helper_pb2.NamespaceRef, host: NsHandle,
             dir_checked: bool = False) -> NsHandle:
    """Open an existing namespace; NamespaceGone if missing or not the expected inode.
    `dir_checked`: see `named_ns_path`."""
    kind = ref.WhichOneof("kind")
    if kind is None:
        handle = open_ns_file(host.path, follow=True)
    elif kind == "name":
        handle = open_ns_file(named_ns_path(policy, ref.name, "namespace", dir_checked))
    elif kind == "pid":
        handle = open_ns_file(f"/proc/{ref.pid}/ns/net", follow=True)
        if handle.key == host.key:
            handle.close()
            raise PolicyRefused(f"PID {ref.pid} is in the helper's own namespace; use host")
    else:
        handle = open_ns_file(canonical_ns_path(policy, ref.path, "namespace"))
    try:
        check_expected_inode(ref, handle)
    except NamespaceGone:
        handle.close()
        raise
    return handle


def check_expected_inode(ref: helper_pb2.NamespaceRef, handle: NsHandle) -> None:
    """A reference with `expect_inode` names that namespace only; another is NamespaceGone."""
    if ref.expect_inode and ref.expect_inode != handle.inode:
        raise NamespaceGone(
            f"{describe_ref(ref)} now has inode {handle.inode}, expected {ref.expect_inode}"
        )


def describe_ref(ref: helper_pb2.NamespaceRef) -> str:
    kind = ref.WhichOneof("kind")
    if kind is None:
        return "the helper's namespace"
    return f"namespace {kind}={getattr(ref, kind)}"


def _make_run_dir_shared() -> None:
    os.makedirs(NETNS_RUN_DIR, mode=0o755, exist_ok=True)
    try:
        _mount("none", NETNS_RUN_DIR, "none", MS_SHARED | MS_REC)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        _mount(NETNS_RUN_DIR, NETNS_RUN_DIR, "none", MS_BIND | MS_REC)
        _mount("none", NETNS_RUN_DIR, "none", MS_SHARED | MS_REC)


def _bind_new_netns(target: str) -> None:
    _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
    _mount("/proc/thread-self/ns/net", target, "none", MS_BIND)


def create_named(name: str) -> str:
    """Create /var/run/netns/<name> exactly like `ip netns add`; return its path."""
    path = os.path.join(NETNS_RUN_DIR, name)
    try:
        _make_run_dir_shared()
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0))
    except OSError as exc:
        raise KernelError(f"cannot create namespace file {path}: {exc.strerror}") from exc
    try:
        on_namespace_thread(lambda: _bind_new_netns(path))
    except BaseException as exc:
        # Whatever failed (a thread that cannot start raises RuntimeError), an empty file
        # left here would read as a namespace that is gone, for good.
        try:
            os.unlink(path)
        except OSError as unlink_exc:
            log.error("cannot remove %s after a failed create: %s", path, unlink_exc)
        if isinstance(exc, Exception):
            raise KernelError(f"cannot create namespace {name}: {exc}") from exc
        raise
    return path


def remove_named(path: str) -> None:
    """Undo of `create_named`: detach the bind mount and remove the file."""
    _check(_libc.umount2(path.encode(), MNT_DETACH), f"umount {path}")
    os.unlink(path)


def list_named() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def netlink_socket_in(fd: int) -> socket.socket:
    """A NETLINK_ROUTE socket bound to the namespace behind `fd`."""

    def make() -> socket.socket:
        _check(_libc.setns(fd, CLONE_NEWNET), "setns")
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)

    return on_namespace_thread(make)


@dataclass
class _Entry:
    ipr: Rtnl
    path: str
    inode: int


def _open_socket(handle: NsHandle) -> Rtnl:
    try:
        return Rtnl(netlink_socket_in(handle.fd))
    except (OSError, RuntimeError) as exc:
        raise KernelError(f"cannot open a netlink socket in {handle.path}: {exc}; retry") from exc


class SocketCache:
    """One netlink socket per namespace inode, at most `limit` of them between batches (least
    recently used go first). A socket fetched with `pin=True` stays open until `release()`:
    a running batch's undo steps and marked deletes hold on to it. Single-threaded."""

    def __init__(self, host: NsHandle, limit: int = MAX_CACHED_NAMESPACES) -> None:
        self._host = host
        self.host = Rtnl.here()  # the helper's own namespace, always open
        self._limit = limit
        self._entries: OrderedDict[tuple[int, int], _Entry] = OrderedDict()
        self._pinned: set[tuple[int, int]] = set()

    def get(self, handle: NsHandle) -> Rtnl:
        """The namespace's socket, pinned until `release()`."""
        if handle.key == self._host.key:
            return self.host
        entry = self._entries.get(handle.key)
        if entry is None:
            self._trim(room=1)
            entry = _Entry(_open_socket(handle), handle.path, handle.inode)
            self._entries[handle.key] = entry
        else:
            self._entries.move_to_end(handle.key)
        self._pinned.add(handle.key)
        return entry.ipr

    @contextmanager
    def scanning(self, handle: NsHandle) -> Iterator[Rtnl]:
        """A socket for one read-only pass (observe, counting) that leaves the cache as it
        was: a scan of many namespaces must not evict the sockets batches keep using."""
        if handle.key == self._host.key:
            yield self.host
            return
        entry = self._entries.get(handle.key)
        if entry is not None:
            yield entry.ipr
            return
        if len(self._entries) < self._limit:
            entry = _Entry(_open_socket(handle), handle.path, handle.inode)
            self._entries[handle.key] = entry
            self._entries.move_to_end(handle.key, last=False)  # first to go
            yield entry.ipr
            return
        ipr = _open_socket(handle)
        try:
            yield ipr
        finally:
            try:
                ipr.close()
            except Exception as exc:
                log.warning("closing the netlink socket for %s failed: %s", handle.path, exc)

    def __len__(self) -> int:
        return len(self._entries)

    def release(self) -> None:
        """The batch is over: nothing is pinned, the cache shrinks to its limit."""
        self._pinned.clear()
        self._trim()

    def _trim(self, room: int = 0) -> None:
        while len(self._entries) + room > self._limit:
            victim = next((k for k in self._entries if k not in self._pinned), None)
            if victim is None:
                return  # all in use by the running batch; `release()` trims later
            self._drop(victim)

    def _drop(self, key: tuple[int, int]) -> None:
        entry = self._entries.pop(key)
        self._pinned.discard(key)
        try:
            entry.ipr.close()
        except Exception as exc:
            log.warning("closing the netlink socket for %s failed: %s", entry.path, exc)

    def sweep(self) -> None:
        """Close sockets whose namespace path vanished, so a dead namespace is not pinned."""
        for key, entry in list(self._entries.items()):
            if key in self._pinned:
                continue
            try:
                alive = os.stat(entry.path).st_ino == entry.inode
            except OSError:
                alive = False
            if not alive:
                self._drop(key)

    def close(self) -> None:
        self._pinned.clear()
        for key in list(self._entries):
            self._drop(key)
        self.host.close()
