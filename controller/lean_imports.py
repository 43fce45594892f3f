"""gRPC and etcd3 imported without modules the controller never uses.

gRPC imports `grpc.aio` at its end, and its Cython core imports asyncio, which imports
ssl (OpenSSL), subprocess, concurrent.futures and more; etcd3 imports uuid (and with it
platform) for its locks; protobuf's descriptor pool imports its pure-Python message
implementation (with text_format, the decoder and the well-known types), which the upb
one in use does not need. Together about 75 million of the 470 million instructions a
restarted controller ran before READY=1 (docs/PERFORMANCE.md, "Resync"); its gRPC is
synchronous and it takes no locks. During their import these modules are stand-ins that
import the real module at the first attribute asked of them, so nothing is lost: they
work as always when something does use them.
"""

from __future__ import annotations

import importlib
import sys
import types

DEFERRED = {"grpc": ("asyncio", "grpc.aio"),
            "etcd3": ("uuid", "google.protobuf.internal.python_message")}


class _OnFirstUse(types.ModuleType):
    """Holds a module's place; forwards every attribute to the real module, imported at
    the first one."""

    def __getattr__(self, name: str) -> object:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), name)


def import_lean() -> None:
    """Import each of `DEFERRED` with its modules as stand-ins, unless already imported."""
    for module, deferred in DEFERRED.items():
        if module in sys.modules:
            continue
        stand_ins = {name: _OnFirstUse(name) for name in deferred if name not in sys.modules}
        sys.modules.update(stand_ins)
        try:
            importlib.import_module(module)
        finally:
            for name, stand_in in stand_ins.items():
                if sys.modules.get(name) is stand_in:
                    del sys.modules[name]
