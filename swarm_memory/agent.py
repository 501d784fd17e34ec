"""Agent memory handles and results (public home; the async source is
``_async/agent.py``, the sync one is generated from it): an agent's context, sessions
with their decision logs, and outcome logs with exact statistics."""

from swarm_memory._async.agent import AsyncAgentContext, AsyncOutcomes, AsyncSession
from swarm_memory._ops.outcomes import wilson
from swarm_memory._sync.agent import AgentContext, Outcomes, Session
from swarm_memory.agent_models import (
    Decision,
    DecisionPage,
    OutcomeStats,
    Recommendation,
    Resumed,
    SessionInfo,
    SessionSummary,
)

__all__ = [
    "AgentContext",
    "AsyncAgentContext",
    "AsyncOutcomes",
    "AsyncSession",
    "Decision",
    "DecisionPage",
    "OutcomeStats",
    "Outcomes",
    "Recommendation",
    "Resumed",
    "Session",
    "SessionInfo",
    "SessionSummary",
    "wilson",
]
