"""The helper's audit log, without privilege: the record format (defined once, shared by the
helper's writer and every reader), reading, verifying and printing it.

`netlinkd` (privileged) writes with `netlinkd.audit.AuditLog` and builds records only with
`netagent_audit.records`; `netagent-audit` / `netlinkd audit` read them here.
"""
