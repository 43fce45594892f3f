"""Typed errors of the helper. Each maps to one `helper_pb2.ErrorKind`."""

from __future__ import annotations

from typing import ClassVar

from netagent_api import helper_pb2


class HelperError(Exception):
    """Base of every error the helper reports to its client."""

    kind: ClassVar[int] = helper_pb2.KERNEL
    index: int = -1  # the operation it is about; -1: the whole batch

    @property
    def kind_name(self) -> str:
        return helper_pb2.ErrorKind.Name(self.kind)


class KernelError(HelperError):
    """A netlink call failed for a reason not covered by a narrower type."""


class NamespaceGone(HelperError):
    kind = helper_pb2.NAMESPACE_GONE


class LinkNotFound(HelperError):
    kind = helper_pb2.LINK_NOT_FOUND


class PolicyRefused(HelperError):
    kind = helper_pb2.POLICY_REFUSED


class OwnedLinkLimit(PolicyRefused):
    """max_owned_links: refuses every create of the batch's owner alike, not just this one."""

    kind = helper_pb2.OWNED_LINK_LIMIT


class Conflict(HelperError):
    kind = helper_pb2.CONFLICT


class BadSignature(HelperError):
    kind = helper_pb2.BAD_SIGNATURE


class Replay(HelperError):
    kind = helper_pb2.REPLAY


class Stale(HelperError):
    kind = helper_pb2.STALE


class Malformed(HelperError):
    kind = helper_pb2.MALFORMED


class AuditUnavailable(HelperError):
    kind = helper_pb2.AUDIT_UNAVAILABLE


class StartupError(Exception):
    """The helper cannot start; the message says what to fix."""
