"""The recall score: golden values of the documented formula, tie order, and ranked
recall through the clients."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from swarm_memory import InvalidInput, Node, Ranking
from swarm_memory.graph import rank, score, text_score

DAY_MS = 86_400_000
T0 = datetime(2026, 1, 2, tzinfo=UTC)
NOW = int(T0.timestamp() * 1000) + DAY_MS  # one day after the node was written

BASE = Node(
    id="a" * 24,
    graph="kb",
    agent="w1",
    context="weather",
    kind="fact",
    content={"fact": "The sky is blue"},
    confidence=0.8,
    tags=("sky",),
    version=1,
    created_at=T0,
    updated_at=T0,
    updated_by="w1",
    expires_at=None,
    valid_from=None,
    invalid_at=None,
    create_revision=1,
    mod_revision=1,
    content_hash="h",
    created_ms=int(T0.timestamp() * 1000),
)


@pytest.mark.parametrize(
    ("ranking", "expected"),
    [
        # 0.4 * 0.8 (confidence) + 0.4 * 0.5 (one half-life old)
        (Ranking(half_life=86400), 0.52),
        # + 0.2 * 1.0: both query words are in the content
        (Ranking(half_life=86400, query="blue SKY"), 0.72),
        # + 0.2 * 0.5: one of two words
        (Ranking(half_life=86400, query="sky green"), 0.62),
        # two half-lives: recency 0.25
        (Ranking(half_life=43200), 0.42),
        # weights are the caller's
        (Ranking(half_life=86400, w_confidence=1, w_recency=0, w_text=0), 0.8),
    ],
)
def test_golden_scores(ranking, expected):
    assert score(BASE, NOW, ranking) == pytest.approx(expected, abs=1e-12)


def test_text_score_counts_distinct_words_of_content_context_kind_and_tags():
    assert text_score(BASE, "weather fact sky") == 1.0
    assert text_score(BASE, "!!!") == 0.0
    assert text_score(BASE, "blue blue rain") == 0.5


def test_ties_go_to_the_newer_node_then_the_larger_id():
    older = BASE
    newer = replace(BASE, id="b" * 24, created_ms=BASE.created_ms + 1)
    same_time_larger_id = replace(BASE, id="c" * 24)
    ranked = rank([older, same_time_larger_id, newer], NOW, Ranking())
    assert [n.id for _, n in ranked] == ["b" * 24, "c" * 24, "a" * 24]


def test_ranked_recall_orders_by_score(env):
    mem = env.mem()
    mem.create_graph("kb")
    g = mem.graph("kb")
    low = g.add({"fact": "the sky is blue"}, context="w", confidence=0.1)
    high = g.add({"fact": "the sky is blue today"}, context="w", confidence=0.9)
    other = g.add({"fact": "grass is green"}, context="w", confidence=0.9)
    page = g.recall(context="w", rank=Ranking(query="sky blue"), limit=3)
    assert [n.id for n in page] == [high.id, other.id, low.id]
    assert page.scores == sorted(page.scores, reverse=True) and page.cursor is None
    with pytest.raises(InvalidInput):
        g.recall(rank=Ranking(half_life=0))
