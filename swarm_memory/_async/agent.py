"""Agent memory handles: an agent's context, a session with its decision log, and an
outcome log — thin shells over the flows in ``_ops/agent.py``, all on one namespace.
Get them from a namespace handle (``ns.context()``, ``ns.session()``,
``ns.outcomes(name)``) or from the client (``mem.context(...)`` and so on).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from swarm_memory._ops import agent as _agent
from swarm_memory._ops import outcomes as _outcomes
from swarm_memory._ops.effects import Context, Flow
from swarm_memory.agent_models import (
    Decision,
    DecisionPage,
    OutcomeStats,
    Recommendation,
    Resumed,
    SessionInfo,
)
from swarm_memory.keys import agent_arg
from swarm_memory.models import Entry

Run = Callable[[Flow[Any]], Any]


class AsyncAgentContext:
    """An agent's working context in a namespace: the entry ``_context/<agent>``.

    Visibility is the namespace's: every agent with read permission there may read and
    resume it; only the agent itself saves it (checked client-side), and only with write
    permission. For a private context use a namespace whose default permission is
    ``"none"``."""

    def __init__(self, run: Run, ctx: Context, agent: str) -> None:
        self._run = run
        self._ctx = ctx
        self.agent = agent_arg(agent)

    @property
    def key(self) -> str:
        """The entry key the context lives at."""
        return _agent.context_key(self.agent)

    async def save(
        self, value: Any, *, expected_version: int | None = None, op_id: str | None = None
    ) -> Entry:
        """Save (a new version). With ``expected_version`` (0: only if none saved yet):
        ConflictError carrying the current entry when another save came first. Raises
        PermissionDenied (not the owner, or no write permission), InvalidInput."""
        entry: Entry = await self._run(
            _agent.save_context(
                self._ctx, self.agent, value, expected_version=expected_version, op_id=op_id
            )
        )
        return entry

    async def get(self) -> Entry | None:
        """The saved context (read permission), or None."""
        entry: Entry | None = await self._run(_agent.get_context(self._ctx, self.agent))
        return entry

    async def resume(self, *, since: int | str | None = None, limit: int = 1000) -> Resumed:
        """The saved context and the namespace's events after it (up to ``limit``; go on
        with ``since=resumed.cursor``). Raises EventsTrimmed when the feed no longer
        holds every event since the save, PermissionDenied without read permission."""
        resumed: Resumed = await self._run(
            _agent.resume_context(self._ctx, self.agent, since=since, limit=limit)
        )
        return resumed

    def __repr__(self) -> str:
        return f"AgentContext(namespace={self._ctx.namespace!r}, agent={self.agent!r})"


class AsyncSession:
    """A session in a namespace: open with a TTL, an append-only decision log, close.

    Sessions are listed by ``ns.sessions()``; when the TTL runs out the session and its
    log are gone. Writing needs write permission, reading read permission."""

    def __init__(self, run: Run, ctx: Context, session_id: str) -> None:
        self._run = run
        self._ctx = ctx
        self.id = _agent.session_id_arg(session_id)

    async def open(
        self,
        *,
        ttl: float | timedelta | None = None,
        meta: Any = None,
        op_id: str | None = None,
    ) -> SessionInfo:
        """Open it (``ttl`` seconds, None: until closed and never expiring). Raises
        SessionNotOpen(state="exists") if it is open or closed and not yet expired."""
        info: SessionInfo = await self._run(
            _agent.open_session(self._ctx, self.id, ttl=ttl, meta=meta, op_id=op_id)
        )
        return info

    async def decide(
        self,
        decision: Any,
        *,
        rationale: str | None = None,
        inputs: Any = None,
        outcome: str | None = None,
        op_id: str | None = None,
    ) -> Decision:
        """Append a decision (JSON) with its rationale, inputs (JSON) and an outcome link
        (e.g. the op id of the outcome record it led to). A replayed ``op_id`` appends
        nothing. Raises SessionNotOpen when the session is absent, expired or closed."""
        d: Decision = await self._run(
            _agent.decide(
                self._ctx,
                self.id,
                decision,
                rationale=rationale,
                inputs=inputs,
                outcome=outcome,
                op_id=op_id,
            )
        )
        return d

    async def decisions(self, *, after: str | None = None, limit: int = 100) -> DecisionPage:
        """A page of the log, oldest first, after the decision id ``after``."""
        page: DecisionPage = await self._run(
            _agent.decisions(self._ctx, self.id, after=after, limit=limit)
        )
        return page

    async def info(self) -> SessionInfo | None:
        """The session's state, or None if it is absent or expired."""
        info: SessionInfo | None = await self._run(_agent.session_info(self._ctx, self.id))
        return info

    async def extend(
        self, ttl: float | timedelta | None, *, op_id: str | None = None
    ) -> datetime | None:
        """A new expiry for the session and its log, ``ttl`` seconds from now (None: never
        expire); returns it. Raises SessionNotOpen(state="absent") once it expired."""
        x: datetime | None = await self._run(
            _agent.extend_session(self._ctx, self.id, ttl=ttl, op_id=op_id)
        )
        return x

    async def close(self, *, op_id: str | None = None) -> int:
        """Close it: no more decisions; the log stays readable until the TTL. Returns how
        many decisions it logged. Raises SessionNotOpen when absent or already closed."""
        n: int = await self._run(_agent.close_session(self._ctx, self.id, op_id=op_id))
        return n

    def __repr__(self) -> str:
        return f"Session(namespace={self._ctx.namespace!r}, id={self.id!r})"


class AsyncOutcomes:
    """An idempotent outcome log in a namespace, with exact statistics per strategy.

    Each ``record`` is counted once however often it is retried with its op id (within
    the namespace's dedupe window). The counters and the ordered durations are kept by
    the recording script itself, so statistics are exact under any concurrency."""

    def __init__(self, run: Run, ctx: Context, name: str) -> None:
        self._run = run
        self._ctx = ctx
        self.name = _outcomes.log_name_arg(name)

    async def record(
        self,
        strategy: str,
        *,
        success: bool,
        duration: float | None = None,
        cost: float | None = None,
        tags: Iterable[str] | None = None,
        op_id: str | None = None,
    ) -> int:
        """Record one outcome of ``strategy``: ``duration`` in seconds and ``cost`` in any
        unit (finite, >= 0, kept to the micro-unit), up to 32 ``tags`` (they ride in the
        ``outcome`` event). Returns the revision it took. Raises InvalidInput,
        PermissionDenied (write), QuotaExceeded (more than 1000 strategies),
        OpIdReused, OutcomeUnknown."""
        rev: int = await self._run(
            _outcomes.record_outcome(
                self._ctx,
                self.name,
                strategy,
                success=success,
                duration=duration,
                cost=cost,
                tags=tags,
                op_id=op_id,
            )
        )
        return rev

    async def stats(self, strategies: Sequence[str] | None = None) -> dict[str, OutcomeStats]:
        """Statistics per strategy (read permission): those named (zeros for one never
        recorded), or every recorded one, by name."""
        out: dict[str, OutcomeStats] = await self._run(
            _outcomes.outcome_stats(self._ctx, self.name, strategies)
        )
        return out

    async def recommend(self, candidates: Iterable[str], *, min_n: int = 10) -> Recommendation:
        """The candidate with the best Wilson 95 % lower bound among those with at least
        ``min_n`` records; the result says when there is not enough data."""
        rec: Recommendation = await self._run(
            _outcomes.recommend_flow(self._ctx, self.name, candidates, min_n)
        )
        return rec

    def __repr__(self) -> str:
        return f"Outcomes(namespace={self._ctx.namespace!r}, name={self.name!r})"
