"""A local stand-in for the Containerfile's image, built without a registry.

The root file system holds this machine's /usr/bin/python3.11, its standard library, the
shared libraries they and the bundled venv's extensions need (found with ldd), and the
.deb's /opt/netagent/venv. `docker import` turns it into an image with the Containerfile's
own ENTRYPOINT and USER.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from pkg_common import PACKAGING

CONTAINERFILE = PACKAGING / "container" / "Containerfile"
PYTHON = Path("/usr/bin/python3.11")
STDLIB = Path("/usr/lib/python3.11")
CONTAINER_UID = 10001


def containerfile_setting(keyword: str) -> str:
    """The last `KEYWORD value` line of the Containerfile's final stage."""
    values = re.findall(rf"^{keyword} (.+)$", CONTAINERFILE.read_text(), re.M)
    assert values, f"{CONTAINERFILE} has no {keyword}"
    return str(values[-1])


def entrypoint() -> list[str]:
    value: list[str] = json.loads(containerfile_setting("ENTRYPOINT"))
    return value


def _needed_libraries(binaries: list[Path]) -> set[Path]:
    found: set[Path] = set()
    for binary in binaries:
        result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
        for match in re.finditer(r"(/\S+\.so[^\s]*) \(0x", result.stdout):
            found.add(Path(match.group(1)))
    return found


def _copy_into(rootfs: Path, path: Path) -> None:
    target = rootfs / path.relative_to("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path.resolve(), target)


def build_rootfs(rootfs: Path, deb: Path) -> None:
    unpacked = rootfs.parent / "deb"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    (rootfs / "opt").mkdir(parents=True)
    shutil.move(unpacked / "opt/netagent", rootfs / "opt/netagent")
    shutil.copytree(STDLIB, rootfs / STDLIB.relative_to("/"), symlinks=True,
                    ignore=shutil.ignore_patterns("test", "idlelib", "tkinter", "__pycache__"))
    _copy_into(rootfs, PYTHON)
    extensions = [PYTHON, *rootfs.glob("usr/lib/python3.11/lib-dynload/*.so"),
                  *rootfs.glob("opt/netagent/venv/lib/python3.11/site-packages/**/*.so")]
    for library in _needed_libraries(extensions):
        _copy_into(rootfs, library)
    etc = rootfs / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text(f"root:x:0:0::/:/sbin/nologin\nnetagent:x:{CONTAINER_UID}:"
                                f"{CONTAINER_UID}::/nonexistent:/sbin/nologin\n")
    (etc / "group").write_text(f"root:x:0:\nnetagent:x:{CONTAINER_UID}:\n")
    for directory in ("tmp", "run/netagent", "etc/netagent", "proc", "sys", "dev"):
        (rootfs / directory).mkdir(parents=True, exist_ok=True)


def import_image(rootfs: Path, docker_url: str, tag: str) -> None:
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    result = subprocess.run(
        ["docker", "-H", docker_url, "import",
         "-c", f"ENTRYPOINT {containerfile_setting('ENTRYPOINT')}",
         "-c", f"USER {containerfile_setting('USER')}", "-", tag],
        stdin=tar.stdout, capture_output=True, text=True, check=False,
    )
    tar.wait()
    assert result.returncode == 0, f"docker import failed: {result.stderr}"
