"""Exit codes come from the error class (errors.py's tree), never from messages."""

from __future__ import annotations

import pytest

from swarm_memory import errors
from swarm_memory.cli.base import ExitCode, describe, exit_code_for

CASES = [
    (errors.InvalidValue("bad", field="value"), ExitCode.USAGE),
    (errors.InvalidName("bad", field="key"), ExitCode.USAGE),
    (errors.InvalidURL("invalid Redis URL x: bad", field="url"), ExitCode.USAGE),
    (errors.ClusterModeMismatch("x", configured_cluster=True, server_cluster=False),
     ExitCode.USAGE),
    (errors.NamespaceNotFound("x", namespace="n"), ExitCode.NOT_FOUND),
    (errors.VersionNotFound("x", version=3), ExitCode.NOT_FOUND),
    (errors.PermissionDenied("x", action="put", required="write", granted="read"),
     ExitCode.PERMISSION),
    (errors.LastAdminError("x", action="revoke", required="admin", granted="admin"),
     ExitCode.PERMISSION),
    (errors.ConflictError("x", current=None, key="k"), ExitCode.CONFLICT),
    (errors.VersionRequired("x", current=None), ExitCode.CONFLICT),
    (errors.NamespaceExists("x", namespace="n"), ExitCode.CONFLICT),
    (errors.LockTimeout("x", holder="a", namespace="n", key="l"), ExitCode.CONFLICT),
    (errors.TransportError("x"), ExitCode.UNREACHABLE),
    (errors.OutcomeUnknown("x", op_id="o"), ExitCode.UNREACHABLE),
    (errors.QuotaExceeded("x", limit_kind="max_keys", limit=1, current=1, requested=1),
     ExitCode.ERROR),
    (errors.ServerError("x"), ExitCode.ERROR),
]  # fmt: skip


@pytest.mark.parametrize(("exc", "code"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_exit_code_by_class(exc, code):
    assert exit_code_for(exc) == code
    assert "\n" not in describe(exc)


def test_messages_come_from_attributes():
    denied = errors.PermissionDenied(
        "raw", action="put", required="write", granted="read", namespace="team", agent="bob"
    )
    assert describe(denied) == (
        "permission denied: agent 'bob' has 'read' in namespace 'team', put needs 'write'"
    )
    assert describe(errors.NamespaceNotFound("raw", namespace="t")) == "namespace 't' not found"
    conflict = errors.ConflictError("raw", current=None, expected=2, key="k")
    assert describe(conflict) == "conflict on key 'k': expected version 2, current is absent"
