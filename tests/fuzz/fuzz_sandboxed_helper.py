#!/usr/bin/env python3
"""Start a throwaway helper in a scratch sandbox, run fuzz_live_helper.py against it, verify.

    sudo .venv/bin/python tests/fuzz/fuzz_sandboxed_helper.py [--count 100000] [--seed 2026]

The figures in docs/SECURITY.md ("Live fuzz run") come from this command. The helper, its
keys, socket and audit log live in a temporary directory that is removed afterwards.
Exit 0 when the fuzz run passed, the audit log verifies and the helper still answers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "netlinkd"))
sys.path.insert(0, str(HERE.parent.parent))

from cryptography.hazmat.primitives.serialization import (  # noqa: E402
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from nlkd_lib import own_sandbox  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    netlinkd = Path(sys.executable).with_name("netlinkd")
    with own_sandbox() as (sandbox, signer):
        pem = sandbox.root / "fuzz-signing.pem"
        pem.write_bytes(signer.key.private.private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        ))
        started = time.monotonic()
        fuzz = subprocess.run(
            [sys.executable, str(HERE / "fuzz_live_helper.py"), "--socket", sandbox.socket,
             "--signing-key", str(pem), "--count", str(args.count), "--seed", str(args.seed)],
            check=False,
        )
        print(f"fuzz run: exit {fuzz.returncode} after {time.monotonic() - started:.1f} s")
        size = os.path.getsize(sandbox.audit)
        print(f"audit log: {size / 1e6:.1f} MB")
        verify = subprocess.run(
            [str(netlinkd), "audit", "verify", "--audit-log", sandbox.audit,
             "--trust-key", sandbox.trust],
            check=False,
        )
        alive = sandbox.hello().version != ""
        print(f"helper answers Hello afterwards: {alive}")
    return 0 if fuzz.returncode == 0 and verify.returncode == 0 and alive else 1


if __name__ == "__main__":
    sys.exit(main())
