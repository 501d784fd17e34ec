"""Client-side Prometheus instrumentation (opt-in): what this process sees of its calls.

Pass a :class:`ClientMetrics` built on *your* registry when you build a client::

    registry = prometheus_client.CollectorRegistry()
    mem = SwarmMemory.from_url(url, agent="planner", metrics=ClientMetrics(registry))
    prometheus_client.start_http_server(9100, registry=registry)

Nothing is registered at import and nothing touches the global registry unless you pass
it. With ``metrics=None`` (the default) the driver's only cost is one attribute check per
call. The server-side half (entries, bytes, locks, Redis health...) is the exporter's,
``swarm_memory.exporter``, which reads Redis at scrape time.

Series (labels are bounded sets: never a key, agent, op id or lock name):

=============================================================  ==================================
``swarm_memory_client_operations_total{op,outcome}``           calls finished, by op and outcome
``swarm_memory_client_operation_duration_seconds{op}``         histogram: wall time of each call
``swarm_memory_client_conflicts_total{op}``                    calls that raised ConflictError
``swarm_memory_client_denials_total{op}``                      calls that raised PermissionDenied
``swarm_memory_client_retries_total{call}``                    transport retries (after the first
                                                               try failed), by script or command
``swarm_memory_client_lock_wait_seconds{outcome}``             histogram: time spent waiting for
                                                               a lock; outcome acquired|timeout
``swarm_memory_client_events_delivered_total{namespace}``      events handed to this process's
                                                               watchers and subscriptions
``swarm_memory_client_watch_lag_revisions{namespace}``         revisions a watcher feed of this
                                                               process was behind the namespace
                                                               head at its last read
``swarm_memory_client_feed_skipped_total{namespace,what}``     feed entries (what=entry) and
                                                               doorbells (what=doorbell) that did
                                                               not decode: logged and skipped
=============================================================  ==================================

``op`` is the name of the operation's flow (``put``, ``get``, ``update``, ``read_events``
...): a fixed set defined by the library. ``outcome`` is ``ok``, ``cancelled``, ``error``
(an exception that is not ours), or the snake-case name of the
:class:`~swarm_memory.errors.SwarmMemoryError` class raised (``conflict_error``,
``permission_denied``, ``quota_exceeded``, ``outcome_unknown``...).

Watcher lag is measured here, in the client, because only the process that runs a
watcher knows its position: it is the namespace revision the feed read returned minus the
revision of the watcher's cursor after that read (0 = caught up). With several feeds of
one namespace in a process (several agents), the last read sets it.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from time import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import values as pc_values
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from swarm_memory import errors

# Latency of one call: a put is ~0.5 ms on loopback; CAS loops and retries take longer.
OPERATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# Lock waits run from "free at once" to the lock's TTL (default 30 s) and beyond.
LOCK_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
LOCK_WAIT_OUTCOMES = ("acquired", "timeout")

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")
_outcome_cache: dict[type[BaseException], str] = {}


def outcome_of(exc: BaseException | None) -> str:
    """The ``outcome`` label for a call that raised ``exc`` (None: ``ok``). A bounded set:
    our error classes' names, ``cancelled`` or ``error``."""
    if exc is None:
        return "ok"
    kind = type(exc)
    found = _outcome_cache.get(kind)
    if found is None:
        if isinstance(exc, GeneratorExit | asyncio.CancelledError | KeyboardInterrupt):
            found = "cancelled"
        else:
            found = "error"
            # The nearest class of ours in the MRO: a user subclass maps to its parent.
            for cls in kind.__mro__:
                if cls.__module__ == errors.__name__ and issubclass(cls, errors.SwarmMemoryError):
                    found = _CAMEL.sub("_", cls.__name__).lower()
                    break
        _outcome_cache[kind] = found
    return found


class ClientMetrics:
    """Client-side metrics registered on ``registry`` (never the global one by default).

    One instance may serve many clients (pass the same object to each); it is
    thread-safe. Build one per registry: registering the same names twice raises
    ``ValueError`` (prometheus_client's duplicate check).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # The two series every call updates. prometheus_client's Counter and Histogram
        # take a lock per inc (a histogram observation: its sum and a bucket, found by a
        # linear scan) behind several method calls: 1.35 µs a call through cached label
        # children, against 0.57 µs here (timeit, this VM), where the bench allows all of
        # client-side metrics 3 % of a put (bench/core.py, ours.put+metrics). _CallStats
        # counts under one lock and hands the same series to the registry at scrape time.
        # In prometheus_client's multiprocess mode (values shared through files) the
        # library's own classes are kept, since only they write there.
        self._calls: _CallStats | _LibraryCallStats
        if _in_process_values():
            self._calls = _CallStats()
            registry.register(self._calls)
        else:
            self._calls = _LibraryCallStats(registry)
        # A call that finished "ok" (nearly all): the drivers call this, one frame fewer
        # than observe_operation (stop 24: metrics cost a put ~1.8 -> ~1.5 µs of client CPU,
        # bench.client_cost's replay; docs/performance.md).
        self.observe_ok: Callable[[str, float], None] = self._calls.observe_ok
        self.conflicts = Counter(
            "swarm_memory_client_conflicts",
            "Calls that raised ConflictError (a CAS lost, first-wins, version required).",
            ["op"],
            registry=registry,
        )
        self.denials = Counter(
            "swarm_memory_client_denials",
            "Calls refused by a permission check (PermissionDenied).",
            ["op"],
            registry=registry,
        )
        self.retries = Counter(
            "swarm_memory_client_retries",
            "Transport-level retries (the first try of the call failed), by script/command.",
            ["call"],
            registry=registry,
        )
        self.lock_wait = Histogram(
            "swarm_memory_client_lock_wait_seconds",
            "Time spent waiting to acquire a lock, by outcome (acquired|timeout).",
            ["outcome"],
            buckets=LOCK_WAIT_BUCKETS,
            registry=registry,
        )
        self.events_delivered = Counter(
            "swarm_memory_client_events_delivered",
            "Events handed to this process's watchers and subscriptions.",
            ["namespace"],
            registry=registry,
        )
        self.feed_skipped = Counter(
            "swarm_memory_client_feed_skipped",
            "Feed stream entries (what=entry) and doorbell payloads (what=doorbell) that "
            "did not decode: reported and skipped, never a stall.",
            ["namespace", "what"],
            registry=registry,
        )
        self.watch_lag = Gauge(
            "swarm_memory_client_watch_lag_revisions",
            "Revisions a watcher feed was behind its namespace's head at its last read.",
            ["namespace"],
            registry=registry,
        )

    # -- called by the driver (_drive.py) ------------------------------------------------

    def observe_operation(
        self, op: str, outcome: str, seconds: float, exc: BaseException | None = None
    ) -> None:
        """Count one finished call of ``op`` with ``outcome`` taking ``seconds`` (the
        drivers' ``run`` times every flow it runs)."""
        self._calls.observe(op, outcome, seconds)
        if exc is not None:
            if isinstance(exc, errors.ConflictError):
                self.conflicts.labels(op).inc()
            elif isinstance(exc, errors.PermissionDenied):
                self.denials.labels(op).inc()

    def count_retry(self, call: str) -> None:
        """One transport retry of ``call`` (a script name or a Redis command name)."""
        self.retries.labels(call).inc()

    # -- called by the lock code and the event hub ---------------------------------------

    def observe_lock_wait(self, seconds: float, outcome: str) -> None:
        """Record time spent waiting for a lock. ``outcome``: ``"acquired"`` or
        ``"timeout"``. Raises ValueError for anything else (labels stay bounded)."""
        if outcome not in LOCK_WAIT_OUTCOMES:
            raise ValueError(f"lock wait outcome must be one of {LOCK_WAIT_OUTCOMES}")
        self.lock_wait.labels(outcome).observe(max(0.0, seconds))

    def count_events(self, namespace: str, n: int) -> None:
        """``n`` events of ``namespace`` were handed to watchers of this process."""
        if n:
            self.events_delivered.labels(namespace).inc(n)

    def count_skipped(self, namespace: str, what: str, n: int = 1) -> None:
        """``n`` feed entries (``what="entry"``) or doorbells (``"doorbell"``) of
        ``namespace`` did not decode and were skipped."""
        if n:
            self.feed_skipped.labels(namespace, what).inc(n)

    def set_watch_lag(self, namespace: str, revisions: int) -> None:
        """A feed of ``namespace`` was ``revisions`` behind the head at its last read."""
        self.watch_lag.labels(namespace).set(max(0, revisions))


_OPERATIONS = (
    "swarm_memory_client_operations",
    "swarm_memory calls finished by this process, by operation and outcome.",
)
_DURATION = (
    "swarm_memory_client_operation_duration_seconds",
    "Wall time of swarm_memory calls (retries and CAS rounds included).",
)
_BOUNDS = (*OPERATION_BUCKETS, math.inf)
_FOLD_AT = 1024  # "ok" calls of an op folded into the counts at once (see _CallStats)
# The "le" labels, spelled as prometheus_client spells them (floatToGoString: repr, and
# "+Inf"; its exponent form starts at 1e7, above every bound here).
_LE = tuple("+Inf" if math.isinf(b) else repr(float(b)) for b in _BOUNDS)


def _in_process_values() -> bool:
    """prometheus_client keeps metric values in this process (not its multiprocess mode,
    chosen by PROMETHEUS_MULTIPROC_DIR when it is imported)."""
    return pc_values.ValueClass is pc_values.MutexValue


class _CallStats(Collector):
    """``operations_total{op,outcome}`` and ``operation_duration_seconds{op}``, counted
    under one lock and exposed by :meth:`collect` as prometheus_client's Counter and
    Histogram expose them (the same sample names, labels, buckets and ``_created``).

    A call that ended "ok" (nearly every call) only appends its duration to its op's
    list, without a lock (atomic under the GIL). The lists are folded into the counts
    under the lock when one reaches ``_FOLD_AT`` entries and at every scrape, so their
    memory is bounded and a scrape sees every finished call. A fold takes what a list
    held when it looked, from the front, while calls append at the end (``del lst[:n]``
    is one list operation), so no call is lost or counted twice. A call with any other
    outcome (an error) folds the lists and is counted at once, under the lock: the
    durations are added in the order the calls ended, so a sequence of calls gives the
    library's sum to the bit. (Bucket lookup, dict updates and the lock per call cost a
    put ~1.3 µs of client CPU, 3-4 % of a put with everything on one CPU: bench,
    "client-side metrics cost". Logging a tuple a call and folding it item by item cost
    a put ~6.0k client instructions, the lists ~4.9k: ``python -m bench.client_cost
    --callgrind put put_metrics``, stop 37.)"""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # op -> the durations of its "ok" calls not yet folded, in the order they ended
        self._ok: dict[str, list[float]] = {}
        self._counts: dict[tuple[str, str], list[float]] = {}  # [count, created]
        # op -> [per-bucket counts (not cumulative)..., sum, created]
        self._hist: dict[str, list[float]] = {}

    def observe(self, op: str, outcome: str, seconds: float) -> None:
        if outcome == "ok":
            self.observe_ok(op, seconds)
            return
        with self._lock:  # after the "ok" calls that ended before it
            now = time()
            self._fold_locked(now)
            self._add(op, outcome, now, (seconds,))

    def observe_ok(self, op: str, seconds: float) -> None:
        # Nearly every call: its duration alone, on its op's list (no tuple, no lock).
        pending = self._ok.get(op)
        if pending is None:
            pending = self._ok.setdefault(op, [])  # (setdefault: one list, whoever wins)
        pending.append(seconds)
        if len(pending) >= _FOLD_AT:
            self._fold()

    def _fold(self) -> None:
        """Move the calls on the lists into the counts (one folder at a time; calls keep
        appending meanwhile, and what they append after a list's length was read waits
        for the next fold)."""
        with self._lock:
            self._fold_locked(time())

    def _fold_locked(self, now: float) -> None:
        for op, pending in list(self._ok.items()):
            n = len(pending)
            if n:
                batch = pending[:n]
                del pending[:n]  # (one list operation: appends meanwhile stay)
                self._add(op, "ok", now, batch)

    def _add(self, op: str, outcome: str, now: float, durations: Sequence[float]) -> None:
        """Count calls of ``op`` that ended with ``outcome`` (under the lock)."""
        count = self._counts.get((op, outcome))
        if count is None:
            count = self._counts[(op, outcome)] = [0.0, now]
        count[0] += len(durations)
        hist = self._hist.get(op)
        if hist is None:
            hist = self._hist[op] = [0.0] * (len(_BOUNDS) + 1) + [now]
        total = hist[-2]
        for seconds in durations:  # (in order, one by one: the library's sum, to the bit)
            hist[bisect_left(_BOUNDS, seconds)] += 1  # the first bound >= seconds
            total += seconds
        hist[-2] = total

    def collect(self) -> Iterable[Metric]:
        self._fold()
        with self._lock:
            counts = {k: list(v) for k, v in self._counts.items()}
            hists = {k: list(v) for k, v in self._hist.items()}
        ops = CounterMetricFamily(*_OPERATIONS, labels=("op", "outcome"))
        for (op, outcome), (n, created) in counts.items():
            ops.add_metric((op, outcome), n, created=created)
        yield ops
        duration = HistogramMetricFamily(*_DURATION, labels=("op",))
        for op, hist in hists.items():
            cumulative, buckets = 0.0, []
            for le, n in zip(_LE, hist, strict=False):
                cumulative += n
                buckets.append((le, cumulative))
            duration.add_metric((op,), buckets, hist[-2])
            duration.samples.append(Sample(_DURATION[0] + "_created", {"op": op}, hist[-1]))
        yield duration


class _LibraryCallStats:
    """The same two series through prometheus_client's own Counter and Histogram (its
    multiprocess mode)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.operations = Counter(*_OPERATIONS, ["op", "outcome"], registry=registry)
        self.duration = Histogram(*_DURATION, ["op"], buckets=OPERATION_BUCKETS, registry=registry)

    def observe(self, op: str, outcome: str, seconds: float) -> None:
        self.operations.labels(op, outcome).inc()
        self.duration.labels(op).observe(seconds)

    def observe_ok(self, op: str, seconds: float) -> None:
        self.observe(op, "ok", seconds)
