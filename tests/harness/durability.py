"""What a piece of code makes durable, in order: each `os.fsync` and `os.fdatasync` (named
by the file its descriptor refers to) and each rename, recorded through the real calls."""

from __future__ import annotations

import os

import pytest


class DurabilitySpy:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[str] = []
        real_fsync, real_fdatasync = os.fsync, os.fdatasync
        real_replace, real_rename = os.replace, os.rename

        def fsync(fd: int) -> None:
            self.events.append(f"fsync {os.readlink(f'/proc/self/fd/{fd}')}")
            real_fsync(fd)

        def fdatasync(fd: int) -> None:
            self.events.append(f"fdatasync {os.readlink(f'/proc/self/fd/{fd}')}")
            real_fdatasync(fd)

        def replace(source: str, target: str) -> None:
            self.events.append(f"rename {source} {target}")
            real_replace(source, target)

        def rename(source: str, target: str) -> None:
            self.events.append(f"rename {source} {target}")
            real_rename(source, target)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "fdatasync", fdatasync)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "rename", rename)

    def take(self) -> list[str]:
        """The events since the last call."""
        events, self.events = self.events, []
        return events


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
