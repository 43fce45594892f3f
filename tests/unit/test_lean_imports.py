"""controller.lean_imports: gRPC and etcd3 without asyncio, ssl and uuid, which the
controller never uses, and those modules still whole when something does use them."""

from __future__ import annotations

import json
import subprocess
import sys

_UNUSED = ("asyncio", "ssl", "subprocess", "typing_extensions", "grpc.aio", "uuid",
           "platform", "google.protobuf.internal.python_message", "google.protobuf.text_format")


def _run(code: str) -> list[object]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    found: list[object] = json.loads(done.stdout)
    return found


def test_grpc_and_etcd3_come_without_the_modules_the_controller_does_not_use() -> None:
    loaded = _run("import json, sys\n"
                  "from controller.lean_imports import import_lean\n"
                  "import_lean()\n"
                  "import etcd3, grpc\n"
                  "from netagent_api import helper_pb2\n"
                  f"print(json.dumps(sorted(set(sys.modules) & set({_UNUSED!r}))))\n")
    assert loaded == []


def test_a_deferred_module_is_the_real_one_once_used() -> None:
    found = _run("import json, sys\n"
                 "from controller.lean_imports import import_lean\n"
                 "import_lean()\n"
                 "import etcd3, grpc\n"
                 "channel = grpc.aio.insecure_channel('unix:///nonexistent')\n"
                 "lock = etcd3.Lock('name')\n"
                 "import asyncio, uuid\n"
                 "from google.protobuf import text_format\n"
                 "from netagent_api import helper_pb2\n"
                 "text = text_format.MessageToString(helper_pb2.LinkEvent(generation=3))\n"
                 "print(json.dumps([type(channel).__module__, len(lock.uuid),\n"
                 "                  type(sys.modules['grpc.aio']).__name__,\n"
                 "                  asyncio.run.__module__, uuid.uuid4().version, text]))\n")
    assert found == ["grpc.aio._channel", 16, "module", "asyncio.runners", 4,
                     "generation: 3\n"]
