"""Hand-written mutants of the privileged boundary, each run against the tests meant to
catch it: a repeatable mutation score for docs/SECURITY.md (issue 15, part 7). The last four are
mutants of controller/reconcile.py the issue lists.

    sudo .venv/bin/python bench/mutants.py [--only SUBSTRING] [--json FILE]

Each mutant replaces one exact snippet of a source file (it must occur exactly once), runs
its tests with pytest -x, and restores the file whatever happens. A mutant is killed when the
tests fail (or time out). Run it on a clean checkout with nothing else using it: the files
are changed in place while a mutant runs. It takes several minutes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTEST = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", "-p",
          "no:cacheprovider"]
SEC = "tests/security/test_boundary_checks.py"


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    before: str
    after: str
    tests: tuple[str, ...]


MUTANTS: tuple[Mutant, ...] = (
    Mutant("trust: owner check removed", "netlinkd/trust.py",
           "if info.st_uid not in (0, os.getuid()):", "if False:",
           (f"{SEC}::test_trust_file_or_directory_owned_by_another_uid_is_refused",)),
    Mutant("trust: mode check removed", "netlinkd/trust.py",
           "if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):", "if False:",
           ("tests/netlinkd/test_units.py::test_trust_file_writable_by_others_is_refused",)),
    Mutant("trust: ed25519 key type not checked", "netagent_audit/trustfile.py",
           'if len(parts) < 2 or parts[0] != "ed25519":', "if len(parts) < 2:",
           (f"{SEC}::test_a_key_of_another_type_is_refused_even_when_its_bytes_fit",)),
    Mutant("policy: owner characters not checked", "netlinkd/policy.py",
           '_OWNER_RE = re.compile(r"[A-Za-z0-9_.@+=/-]+")', '_OWNER_RE = re.compile(r".+")',
           (f"{SEC}::test_owner_labels_with_other_characters_are_refused",)),
    Mutant("policy: namespace dirname loosened to a prefix", "netlinkd/policy.py",
           "if os.path.dirname(real) == base:", "if real.startswith(base):",
           (f"{SEC}::test_namespace_path_must_sit_directly_in_an_allowed_directory",)),
    Mutant("policy: pid <= 1 turned into < 1", "netlinkd/policy.py",
           "if ref.pid <= 1:", "if ref.pid < 1:",
           (f"{SEC}::test_pid_references_to_pid_0_and_1_are_refused",)),
    Mutant("policy: observe's namespaces not checked", "netlinkd/policy.py",
           'check_ns_ref(policy, ref, "observe", passed)', "pass",
           (f"{SEC}::test_observed_namespaces_are_checked_by_the_policy",)),
    Mutant("policy: PID references allowed whatever the policy", "netlinkd/policy.py",
           "if not policy.allow_pid_refs:", "if False:",
           ("tests/netlinkd/test_refusals.py::test_policy_file_limits_addresses_ops_and_pid_refs",)),
    Mutant("policy: lo may be managed", "netlinkd/policy.py",
           'if name == "lo":', "if False:",
           (f"{SEC}::test_loopback_is_refused_by_the_policy_itself",)),
    Mutant("policy: one name twice in one namespace", "netlinkd/policy.py",
           "if pair.a.name == pair.b.name and same_ref(pair.a.netns, pair.b.netns):", "if False:",
           ("tests/netlinkd/test_pairs.py::test_both_ends_may_share_a_name_in_two_namespaces",)),
    Mutant("policy: max_ops_per_batch off by one", "netlinkd/policy.py",
           "if len(batch.operations) > policy.max_ops_per_batch:",
           "if len(batch.operations) > policy.max_ops_per_batch + 1:",
           ("tests/netlinkd/test_refusals.py::test_policy_file_limits_addresses_ops_and_pid_refs",)),
    Mutant("policy: multicast MAC accepted", "netlinkd/policy.py",
           "if int(mac[:2], 16) & 1 or", "if False or",
           ("tests/netlinkd/test_refusals.py::test_mtu_and_mac_the_kernel_would_reject_are_refused_first",)),
    Mutant("verify: signature not checked", "netlinkd/verify.py",
           "if not key.verifies(signed.signature, signed.batch):", "if False:",
           ("tests/fuzz/test_fuzz_decoder.py",)),
    Mutant("verify: a batch queued across a trust reload not checked again", "netlinkd/verify.py",
           "if verified.generation != self.trust.generation:", "if False:",
           ("tests/netlinkd/test_units.py::test_the_signature_is_checked_once_unless_the_trust_keys_were_reloaded",)),
    Mutant("verify: time window doubled", "netlinkd/verify.py",
           "if abs(skew_ms) > window_s * 1000:", "if abs(skew_ms) > window_s * 2000:",
           ("tests/netlinkd/test_units.py::test_time_window",)),
    Mutant("verify: replay seen at the batch's own time", "netlinkd/verify.py",
           "batch.sequence, int(now))",
           "batch.sequence, max(int(now), batch.unix_time_ms // 1000))",
           ("tests/security/test_replay.py",)),
    Mutant("verify: a watch request opens two streams", "netlinkd/verify.py",
           "if (request.key_id, request.unix_time_ms) in self._watches:", "if False:",
           ("tests/netlinkd/test_verify_units.py::test_a_watch_request_is_signed_recent_and_used_once",)),
    Mutant("front: watch requests not checked", "netlinkd/front.py",
           "self._service.verifier.check_watch(request)", "pass",
           ("tests/e2e/test_link_stream.py::test_keyless_watchers_cannot_hold_the_slots",)),
    Mutant("replay: an equal sequence accepted", "netlinkd/replay.py",
           "if recorded is not None and seq <= recorded[0]:",
           "if recorded is not None and seq < recorded[0]:",
           ("tests/fuzz/test_fuzz_decoder.py",)),
    Mutant("replay: epoch time overwritten", "netlinkd/replay.py",
           "max(now_s, recorded[1]) if recorded else now_s", "now_s",
           ("tests/security/test_replay.py",)),
    Mutant("replay: audit log's intents ignored at start", "netlinkd/replay.py",
           "if seq > entry[0]:", "if False:",
           ("tests/security/test_replay.py",)),
    Mutant("audit: record not fsync'd", "netlinkd/audit.py",
           "        try:\n            os.fsync(self._fd)\n        except OSError as exc:\n"
           "            self._poison()",
           "        try:\n            pass\n        except OSError as exc:\n"
           "            self._poison()",
           (f"{SEC}::test_every_record_is_fsynced_before_append_returns",)),
    Mutant("audit: helper resumes a log behind its head", "netlinkd/audit.py",
           "if recorded == self._head or (", "if True or (",
           ("tests/security/test_audit_head.py::test_helper_refuses_to_resume_a_log_behind_its_head",)),
    Mutant("audit: head not recorded", "netlinkd/audit.py",
           "os.pwrite(self._head_fd, self._head.encode(), (1 - self._slot) * HEAD_SLOT)", "pass",
           ("tests/security/test_audit_head.py",)),
    Mutant("audit: head written over the last one", "netlinkd/audit.py",
           "os.pwrite(self._head_fd, self._head.encode(), (1 - self._slot) * HEAD_SLOT)",
           "os.pwrite(self._head_fd, self._head.encode(), self._slot * HEAD_SLOT)",
           ("tests/security/test_audit_head.py",)),
    Mutant("chain: intent fields not compared", "netagent_audit/chain.py",
           "if record.get(name) != value:", "if False:",
           ("tests/security/test_audit_tamper.py",)),
    Mutant("chain: intent ts not checked", "netagent_audit/chain.py",
           "if abs(ts_ms - batch.unix_time_ms) > state.window_ms + INTENT_TS_SLACK_MS:",
           "if False:",
           ("tests/security/test_audit_head.py",)),
    Mutant("chain: record numbers not checked", "netagent_audit/chain.py",
           "if n != state.n + 1:", "if False:",
           ("tests/security/test_audit_head.py",)),
    Mutant("chain: head not compared", "netagent_audit/chain.py",
           "if head.n > state.n:", "if False:",
           ("tests/security/test_audit_head.py",)),
    Mutant("privileges: no_new_privs not set", "netlinkd/privileges.py",
           "prctl.set_no_new_privs(1)", "pass",
           ("tests/security/test_privileges.py",)),
    Mutant("mountguard: any mount flag allowed", "netlinkd/mountguard.py",
           '"mount": (3, MS_BIND | MS_REC | MS_SHARED, MS_BIND | MS_SHARED),',
           '"mount": (3, (1 << 64) - 1, 0),',
           ("tests/security/test_least_privilege.py::test_remount_fails_under_the_helpers_mount_filter",)),
    Mutant("server: a second instance is not stopped first", "netlinkd/server.py",
           "    socket dir, privilege drop and mount filter, threads.\"\"\"\n"
           "    refuse_if_served(options.socket)",
           "    socket dir, privilege drop and mount filter, threads.\"\"\"",
           ("tests/security/test_least_privilege.py::test_second_serve_touches_nothing_of_the_live_helper",)),
    Mutant("netns: an unmounted namespace file is a policy refusal", "netlinkd/netns.py",
           "if exc.errno == errno.EACCES and _is_empty_file(path):", "if False:",
           ("tests/netlinkd/test_refs_and_limits.py::test_unmounted_named_namespace_is_gone_not_refused",)),
    Mutant("executor: ownership pre-check dropped", "netlinkd/executor.py",
           "            self._refuse_certain_failures(ops)\n", "",
           (f"{SEC}::test_mixed_batch_of_owned_and_foreign_deletes_changes_nothing",)),
    Mutant("executor: set_link not undone", "netlinkd/executor.py",
           'self._push_undo(undo, f"restore {op.name}", links.send, ipr, restore,', "(",
           (f"{SEC}::test_a_failed_batch_undoes_its_set_link_and_add_address",)),
    Mutant("executor: add_address not undone", "netlinkd/executor.py",
           'self._push_undo(undo, f"undo {what}", links.send, view.nl,\n'
           '                        rtnl.del_address(',
           "(lambda *args: None)((",
           (f"{SEC}::test_a_failed_batch_undoes_its_set_link_and_add_address",)),
    Mutant("executor: owned-link limit off by one", "netlinkd/executor.py",
           "        if counts[self._owner] + count > limit:\n            raise",
           "        if counts[self._owner] + count > limit + 1:\n            raise",
           ("tests/netlinkd/test_refs_and_limits.py::test_owned_link_limit_from_policy_file",
            f"{SEC}::test_owned_link_limit_is_exact_for_an_odd_limit")),
)


RECONCILE = "tests/unit/test_reconcile.py"
MUTANTS += (
    Mutant("reconcile: a helper failure overwrites a validation error", "controller/reconcile.py",
           "if current is not None and current.state != State.ERROR:",
           "if current is not None:", (RECONCILE,)),
    Mutant("reconcile: a claim whose peer owns nothing", "controller/reconcile.py",
           "            if peer not in owners:\n                continue\n", "", (RECONCILE,)),
    Mutant("reconcile: a held peer does not hold the pair", "controller/reconcile.py",
           "return end.availability.hold or (peer is not None and peer.availability.hold)",
           "return end.availability.hold", (RECONCILE,)),
    Mutant("reconcile: held links of a pair whose peer names another", "controller/reconcile.py",
           "if peer is None or peer.config.peer != end.config.name:", "if peer is None:",
           (RECONCILE,)),
)


def run(mutant: Mutant) -> tuple[bool, float]:
    path = ROOT / mutant.path
    original = path.read_text()
    if original.count(mutant.before) != 1:
        raise SystemExit(f"{mutant.name}: snippet not found exactly once in {mutant.path}")
    started = time.monotonic()
    try:
        path.write_text(original.replace(mutant.before, mutant.after))
        try:
            result = subprocess.run([*PYTEST, *mutant.tests], cwd=ROOT, capture_output=True,
                                    timeout=900, check=False)
            killed = result.returncode != 0
        except subprocess.TimeoutExpired:
            killed = True
    finally:
        path.write_text(original)
    return killed, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="run the mutants whose name has this")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    results: list[dict[str, object]] = []
    killed_count = 0
    for mutant in MUTANTS:
        if args.only in mutant.name:
            killed, seconds = run(mutant)
            killed_count += killed
            results.append({"mutant": mutant.name, "killed": killed, "seconds": round(seconds)})
            print(f"{'killed  ' if killed else 'SURVIVED'}  {seconds:5.0f} s  {mutant.name}",
                  flush=True)
    print(f"score: {killed_count}/{len(results)} killed")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0 if killed_count == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
