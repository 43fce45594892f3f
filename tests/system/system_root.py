"""Debian bookworm root file systems for the systemd-as-PID-1 tests.

The base root (debootstrap + systemd, etcd and a few tools) is cached outside the checkout,
in $NETAGENT_TEST_CACHE (default /var/cache/netagent-tests), keyed by the suite, mirror and
package list, and rebuilt when older than a week. Each run lays an overlay on it, installs
the .deb there with `apt-get install` (its dependencies come from the mirror; the downloaded
archives are cached too) and tars the result for `docker import`. Every mount is made in a
private mount namespace (`unshare --mount`), so none outlives the run, even after a failure.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What the booted machine needs besides the .deb and its dependencies: an init, etcd for the
# controller, ping for the pair, and ps/nsenter/findmnt (procps, util-linux is essential).
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "etcd-server", "iputils-ping", "procps")
MAX_AGE_S = 7 * 24 * 3600
DEB_IN_IMAGE = "/root"


@dataclass(frozen=True)
class InstalledImage:
    """The installed root imported into the private dockerd (conftest's installed_image)."""

    tag: str
    deb_name: str
    tar: Path
    install_seconds: float


def cache_dir() -> Path:
    return Path(os.environ.get("NETAGENT_TEST_CACHE", "/var/cache/netagent-tests"))


def _base_key() -> str:
    text = "\n".join((SUITE, MIRROR, *BASE_PACKAGES))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder at a time (two checkouts may test at once)."""
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def base_root() -> Path:
    """The cached bookworm root (read-only to callers); made by debootstrap when missing."""
    cache = cache_dir()
    cache.mkdir(mode=0o755, parents=True, exist_ok=True)
    root = cache / f"{SUITE}-{_base_key()}"
    stamp = cache / f"{root.name}.complete"
    with _locked(cache / ".lock"):
        if stamp.exists() and time.time() - stamp.stat().st_mtime < MAX_AGE_S:
            return root
        stamp.unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=cache))
        try:
            _debootstrap(scratch)
            scratch.rename(root)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        stamp.touch()
    return root


def _debootstrap(target: Path) -> None:
    os.chmod(target, 0o755)
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
          SUITE, str(target), MIRROR])
    for archive in (target / "var/cache/apt/archives").glob("*.deb"):
        archive.unlink()
    # The container's own names; the build machine's would mislead.
    (target / "etc/hostname").write_text("netagent-system-test\n")
    (target / "etc/machine-id").write_text("")  # systemd makes one at each boot


def build_image_tar(base: Path, deb: Path, work: Path, tar: Path) -> float:
    """`apt-get install ./<deb>` on an overlay of `base`, then tar it. Returns the install's
    seconds. The .deb stays in the image at /root for the reinstall steps."""
    archives = cache_dir() / "apt-archives"
    (archives / "partial").mkdir(parents=True, exist_ok=True)
    for name in ("upper", "work", "merged"):
        (work / name).mkdir(parents=True, exist_ok=True)
    timing = work / "install-seconds"
    script = r"""
set -euo pipefail
base=$1 work=$2 deb=$3 archives=$4 tar=$5 timing=$6
m=$work/merged
mount -t overlay overlay -o "lowerdir=$base,upperdir=$work/upper,workdir=$work/work" "$m"
mount --bind "$archives" "$m/var/cache/apt/archives"
mount -t proc proc "$m/proc"
mount --bind /dev "$m/dev"
cp "$deb" "$m/root/"
start=$EPOCHREALTIME
chroot "$m" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C \
    DEBIAN_FRONTEND=noninteractive sh -c \
    'cd /root && apt-get install -y -q --no-install-recommends "./$1"' sh "$(basename "$deb")"
echo "$start $EPOCHREALTIME" >"$timing"
umount "$m/var/cache/apt/archives" "$m/proc" "$m/dev"
tar -C "$m" --numeric-owner --xattrs -cf "$tar" .
"""
    with _locked(cache_dir() / ".apt-archives.lock"):  # apt locks the archives without waiting
        _run(["unshare", "--mount", "--propagation", "private", "--", "/bin/bash", "-c", script,
              "bash", str(base), str(work), str(deb), str(archives), str(tar), str(timing)])
    start, end = (float(value) for value in timing.read_text().split())
    return end - start


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            check=False)
    if result.returncode != 0:
        raise AssertionError(f"{argv[0]} failed ({result.returncode}):\n"
                             f"{result.stdout[-4000:]}{result.stderr[-4000:]}")
