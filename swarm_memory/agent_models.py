"""Result types of agent memory: resumed contexts, sessions and their decisions, outcome
statistics and recommendations (frozen dataclasses, like ``models.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from swarm_memory.models import Entry, Event


@dataclass(frozen=True, slots=True)
class Resumed:
    """An agent's saved context and what happened in its namespace since it was saved.

    ``context``: the saved entry (None if the agent never saved one; its ``version`` is
    the last acknowledged save). ``events``: the namespace's events after that save, in
    revision order, at most the ``limit`` asked for. ``cursor``: pass it to
    ``ns.watch(since=cursor)`` (or ``resume(since=cursor)``) to go on after them;
    ``complete``: False when more events wait past the limit."""

    context: Entry | None
    events: list[Event]
    cursor: str
    complete: bool


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session's state. ``state``: "open" or "closed"; ``decisions``: how many."""

    id: str
    state: str
    opened_by: str
    opened_at: datetime
    expires_at: datetime | None
    decisions: int
    meta: Any = None
    closed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """A live session as the namespace's session index lists it."""

    id: str
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class Decision:
    """One entry of a session's decision log. ``seq`` counts from 1 in log order (the
    order the script appended them: each writer's decisions in the order it made them);
    ``id`` is its position in the log (``decisions(after=id)`` reads on from it)."""

    id: str
    seq: int
    agent: str
    time: datetime
    decision: Any
    rationale: str | None = None
    inputs: Any = None
    outcome: str | None = None  # a link: e.g. the op id of the outcome it led to


@dataclass(frozen=True, slots=True)
class DecisionPage:
    decisions: list[Decision]
    next: str | None  # pass as ``after=`` for the next page; None at the end


@dataclass(frozen=True, slots=True)
class OutcomeStats:
    """Exact statistics of one strategy in an outcome log.

    ``success_rate`` = successes / n; ``wilson_low``/``wilson_high``: the Wilson score
    95 % interval of the success rate (None when n = 0). Durations (seconds, only
    records that gave one): ``median_duration`` (the mean of the two middle values when
    their count is even) and ``p90_duration`` (nearest rank: the ceil(0.9·k)-th
    smallest). Costs: ``total_cost`` over records that gave one, ``mean_cost`` per such
    record."""

    strategy: str
    n: int
    successes: int
    success_rate: float | None
    wilson_low: float | None
    wilson_high: float | None
    durations: int
    median_duration: float | None
    p90_duration: float | None
    costs: int
    total_cost: float
    mean_cost: float | None


@dataclass(frozen=True, slots=True)
class Recommendation:
    """What ``recommend`` picked, and why — statistics, not learning.

    ``choice``: the candidate with the best Wilson lower bound among those with at least
    ``min_n`` records (ties: higher success rate, then lower median duration, then name);
    None when no candidate has enough data (``enough_data`` False). ``insufficient``:
    candidates with fewer than ``min_n`` records (worth trying to learn more about them).
    ``reason`` says it in words."""

    choice: str | None
    enough_data: bool
    reason: str
    lower_bound: float | None
    min_n: int
    stats: dict[str, OutcomeStats] = field(default_factory=dict)
    insufficient: list[str] = field(default_factory=list)
