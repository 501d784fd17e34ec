"""The checkpointer's flows, written once for the sync and the async saver (see ``_flow``).

Layout: one swarm_memory namespace per LangGraph thread (``_names.encode_name``), so every
key of a thread shares one hash tag and one Cluster slot. In it:

=========================================  ===============================================
``c/<ns>/<checkpoint id>``                 the checkpoint without its channel values, its
                                           metadata (both through ``serde``), its parent id
                                           and the keys of the blobs it references
``b/<ns>/<channel>/<version>``             one channel value (only ``new_versions`` are
                                           written, as InMemorySaver does)
``w/<ns>/<checkpoint id>/<task>/<idx>``    one pending write
``h/<ns>``                                 the newest checkpoint of ``<ns>`` (id + record):
                                           ``get_tuple`` without an id is one read
``alive``                                  the thread's TTL marker, rewritten by every
                                           ``put``/``put_writes``; when it has expired the
                                           thread is gone (never returned, deleted on sight)
lock ``owner``                             ownership mode's fenced claim
=========================================  ===============================================

``put`` and ``put_writes`` are each one transaction (one script call): blobs + record +
head + marker, or every write of the call, all or nothing, with the head's compare (the
newest id wins, as ``max()`` does in InMemorySaver) and, in ownership mode, every write
fenced with the claim's token. Values go through ``serde.dumps_typed`` and are stored as
``[type, base64]`` inside the JSON entries (never pickle).
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from swarm_memory.errors import (
    FencingError,
    InvalidInput,
    LockTimeout,
    NamespaceExists,
    NamespaceNotFound,
    TransactionConflict,
)
from swarm_memory.langgraph import _names as names
from swarm_memory.langgraph._checkpoint_prune import PAGE, puts, remove_checkpoints
from swarm_memory.langgraph._flow import Call, Flow, Gather, Handles, Tx, chunks
from swarm_memory.langgraph.errors import ThreadOwned, ThreadOwnershipLost
from swarm_memory.models import Entry, TxResult

_ATTEMPTS = 50  # head compares lost in a row before giving up (another writer per try)
_PER_CHECKPOINT = 4  # assembling more checkpoints than this lists their namespace's writes once


@dataclass
class SaverOptions:
    prefix: str = "lg"
    ttl: float | None = None  # seconds a thread lives after its last write; None = forever
    ownership: bool = False
    claim_ttl: float = 30.0
    claim_wait: float = 0.0
    max_events: int = 1000


@dataclass
class _Claim:
    lock: Any
    token: int


@dataclass
class CheckpointCore:
    serde: SerializerProtocol
    options: SaverOptions
    handles: Handles
    known: set[str] = field(default_factory=set)
    heads: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    claims: dict[str, _Claim] = field(default_factory=dict)

    # ------------------------------------------------------------ encoding
    def dump(self, obj: Any) -> list[str]:
        kind, data = self.serde.dumps_typed(obj)
        return [kind, base64.b64encode(data).decode("ascii")]

    def load(self, typed: Sequence[str]) -> Any:
        return self.serde.loads_typed((typed[0], base64.b64decode(typed[1])))

    def thread_ns(self, thread_id: object) -> tuple[str, bool]:
        if not isinstance(thread_id, str | int) or isinstance(thread_id, bool):
            raise InvalidInput(
                f"thread_id must be a str, not {type(thread_id).__name__}",
                field="thread_id",
                value=thread_id,
            )
        text = str(thread_id)
        if not text:
            raise InvalidInput("thread_id must not be empty", field="thread_id", value=text)
        return names.encode_name(self.options.prefix, text)

    # ------------------------------------------------------------ threads
    def ensure(self, thread_id: str) -> Flow[str]:
        name, _ = self.thread_ns(thread_id)
        if name not in self.known:
            # NamespaceExists: another saver made it with other options; still a thread.
            with contextlib.suppress(NamespaceExists):
                yield Call(
                    None,
                    "create_namespace",
                    (name,),
                    {
                        "default_permission": "admin",
                        "max_events": self.options.max_events,
                        "exist_ok": True,
                    },
                )
            self.known.add(name)
        return name

    def fence(self, thread_id: str) -> Flow[int | None]:
        if not self.options.ownership:
            return None
        claim = self.claims.get(thread_id)
        if claim is None:
            claim = yield from self.claim(thread_id, self.options.claim_wait)
        return claim.token

    def claim(self, thread_id: str, wait: float | None) -> Flow[_Claim]:
        name = yield from self.ensure(thread_id)
        old = self.claims.pop(thread_id, None)
        if old is not None:
            yield from self._release_lock(old)
        lock = self.handles.get(name).lock(
            names.OWNER_LOCK, ttl=self.options.claim_ttl, wait=wait, renew=True
        )
        try:
            token = yield Call(None, "acquire", obj=lock)
        except LockTimeout as exc:
            raise ThreadOwned(
                f"thread {thread_id!r} is owned by {exc.holder!r} (claim held until "
                f"{exc.expires_at}); ownership mode lets one worker write a thread at a time",
                holder=exc.holder,
                expires_at=exc.expires_at,
                thread_id=thread_id,
                namespace=name,
                key=names.OWNER_LOCK,
            ) from exc
        claim = _Claim(lock, token)  # a FencingToken: it names the lock it fences with
        self.claims[thread_id] = claim
        return claim

    def release(self, thread_id: str) -> Flow[None]:
        claim = self.claims.pop(thread_id, None)
        if claim is not None:
            yield from self._release_lock(claim)

    def _release_lock(self, claim: _Claim) -> Flow[None]:
        try:
            yield Call(None, "release", obj=claim.lock)
        except Exception:  # lost already: nothing of ours to release
            return

    def write(self, thread_id: str, tx: Any) -> Flow[TxResult]:
        """Commit the transaction ``tx(name, fence)`` builds (one script call), creating
        the thread when it is missing; a refused fence becomes ThreadOwnershipLost."""
        # The transaction first: a value that cannot be encoded fails before anything (the
        # thread's namespace included) is created; a missing thread is created on demand.
        name, _ = self.thread_ns(thread_id)
        fence = yield from self.fence(thread_id)
        for _ in range(3):
            try:
                result: TxResult = yield tx(name, fence)
            except NamespaceNotFound:
                self.known.discard(name)
                yield from self.ensure(thread_id)
                continue
            except FencingError as exc:
                raise ThreadOwnershipLost.from_fencing(thread_id, exc) from exc
            return result
        raise NamespaceNotFound(f"thread namespace {name!r} keeps disappearing", namespace=name)

    def _marker(self, fence: int | None) -> tuple[Any, float | None, int | None]:
        return ({}, self.options.ttl, fence)

    def _extra(self, thread_id: str, fence: int | None) -> dict[str, Any]:
        puts: dict[str, Any] = {names.ALIVE_KEY: self._marker(fence)}
        _, hashed = self.thread_ns(thread_id)
        if hashed:
            puts[names.TID_KEY] = (thread_id, None, fence)
        return puts

    # ------------------------------------------------------------ put
    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Flow[RunnableConfig]:
        conf = config["configurable"]
        thread_id = conf["thread_id"]
        ns = conf.get("checkpoint_ns", "") or ""
        parent = conf.get("checkpoint_id")
        c: dict[str, Any] = dict(checkpoint)
        values: dict[str, Any] = c.pop("channel_values", None) or {}
        cid = checkpoint["id"]
        versions = c.get("channel_versions", {})
        record = {
            "c": self.dump(c),
            "m": self.dump(get_checkpoint_metadata(config, metadata)),
            "p": parent,
            "b": [names.blob_key(ns, ch, ver) for ch, ver in versions.items()],
        }
        blobs = {
            names.blob_key(ns, ch, ver): (self.dump(values[ch]) if ch in values else ["empty", ""])
            for ch, ver in new_versions.items()
        }
        hk = names.head_key(ns)
        written: dict[str, Entry | None] = {}
        for _ in range(_ATTEMPTS):
            cached = self.heads.get((thread_id, ns))
            move_head = cached is None or cid >= cached[0]

            def build(name: str, fence: int | None, move: bool = move_head, at: Any = cached) -> Tx:
                puts: dict[str, Any] = {k: (v, None, fence) for k, v in blobs.items()}
                puts[names.checkpoint_key(ns, cid)] = (record, None, fence)
                checks: dict[str, int] = {}
                if move:
                    checks[hk] = at[1] if at else 0
                    puts[hk] = ({"id": cid, "r": record}, None, fence)
                puts.update(self._extra(thread_id, fence))
                return Tx(name, checks, puts)

            try:
                result = yield from self.write(thread_id, build)
            except TransactionConflict as exc:
                self._learn_head(thread_id, ns, exc.failed[0].current)
                continue
            written = result.entries
            head = written.get(hk)
            if head is not None:
                self.heads[(thread_id, ns)] = (cid, head.version)
            return {
                "configurable": {
                    "thread_id": thread_id,
                    "checkpoint_ns": ns,
                    "checkpoint_id": cid,
                }
            }
        raise TransactionConflict(
            f"the head of thread {thread_id!r} kept moving ({_ATTEMPTS} tries)",
            failed=[],
            current=None,
        )

    def _learn_head(self, thread_id: str, ns: str, entry: Entry | None) -> None:
        if entry is None:
            self.heads.pop((thread_id, ns), None)
        else:
            self.heads[(thread_id, ns)] = (entry.value["id"], entry.version)

    # ------------------------------------------------------------ put_writes
    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> Flow[None]:
        conf = config["configurable"]
        thread_id = conf["thread_id"]
        ns = conf.get("checkpoint_ns", "") or ""
        cid = conf.get("checkpoint_id")
        if not cid:
            raise InvalidInput(
                "put_writes needs a config with a checkpoint_id", field="config", value=conf
            )
        entries: dict[str, Any] = {}
        regular: set[str] = set()
        for idx, (channel, value) in enumerate(writes):
            widx = WRITES_IDX_MAP.get(channel, idx)
            key = names.write_key(ns, cid, task_id, widx)
            entries[key] = [task_id, channel, *self.dump(value), task_path, widx]
            if widx >= 0:
                regular.add(key)  # first write wins (idempotent retries); special ones overwrite
        while entries:

            def build(name: str, fence: int | None) -> Tx:
                puts = {k: (v, None, fence) for k, v in entries.items()}
                puts.update(self._extra(thread_id, fence))
                return Tx(name, {k: 0 for k in entries if k in regular}, puts)

            try:
                yield from self.write(thread_id, build)
            except TransactionConflict as exc:
                for failed in exc.failed:
                    entries.pop(failed.key, None)
                continue
            return

    # ------------------------------------------------------------ reads
    def get_tuple(self, config: RunnableConfig) -> Flow[CheckpointTuple | None]:
        conf = config["configurable"]
        thread_id = conf["thread_id"]
        ns = conf.get("checkpoint_ns", "") or ""
        cid = get_checkpoint_id(config)
        name, _ = self.thread_ns(thread_id)
        key = names.checkpoint_key(ns, cid) if cid else names.head_key(ns)
        try:
            got = yield Call(name, "get_many", ([key, names.ALIVE_KEY],))
        except NamespaceNotFound:
            return None
        entry = got[key]
        if entry is None:
            return None
        if got[names.ALIVE_KEY] is None:  # the thread's TTL ran out: it is gone
            yield from self.drop_expired(thread_id, name)
            return None
        if cid:
            record = entry.value
        else:
            cid, record = entry.value["id"], entry.value["r"]
            self.heads[(thread_id, ns)] = (cid, entry.version)
        tuples = yield from self.assemble(thread_id, ns, [(cid, record)], name)
        return tuples[0]

    def drop_expired(self, thread_id: str, name: str) -> Flow[None]:
        with contextlib.suppress(NamespaceNotFound):
            yield Call(None, "delete_namespace", (name,))
        self.forget(thread_id)

    def forget(self, thread_id: str) -> None:
        name, _ = self.thread_ns(thread_id)
        self.known.discard(name)
        for key in [k for k in self.heads if k[0] == thread_id]:
            del self.heads[key]

    def assemble(
        self,
        thread_id: str,
        ns: str,
        records: Sequence[tuple[str, Mapping[str, Any]]],
        name: str,
        writes: Mapping[str, list[Entry]] | None = None,
    ) -> Flow[list[CheckpointTuple]]:
        """CheckpointTuples for ``records`` of one (thread, ns): one read of every blob they
        reference and, unless ``writes`` (by checkpoint id) is given, one of their writes."""
        blob_keys = sorted({k for _, rec in records for k in rec["b"]})
        write_keys: list[str] = []
        if writes is None:
            # The write keys (one keys() per checkpoint, or one for the whole checkpoint
            # namespace when listing many), then blobs and writes in one get_many.
            patterns = (
                [names.writes_pattern(ns, cid) for cid, _ in records]
                if len(records) <= _PER_CHECKPOINT
                else [names.writes_pattern(ns)]
            )
            listed = yield Gather(tuple(Call(name, "keys", (p,), collect=True) for p in patterns))
            wanted = {cid for cid, _ in records}
            for result in listed:
                if isinstance(result, BaseException):
                    raise result
                write_keys.extend(
                    k for k in result if (names.parse_write_key(k) or ("", ""))[1] in wanted
                )
        got: dict[str, Entry | None] = {}
        for page in chunks([*blob_keys, *write_keys], 500):
            got.update((yield Call(name, "get_many", (page,))))
        blobs = got
        if writes is None:
            grouped: dict[str, list[Entry]] = {}
            for key in write_keys:
                entry = got.get(key)
                parsed = names.parse_write_key(key)
                if entry is not None and parsed is not None:
                    grouped.setdefault(parsed[1], []).append(entry)
            writes = grouped
        out = []
        for cid, rec in records:
            checkpoint = self.load(rec["c"])
            values: dict[str, Any] = {}
            for channel, version in checkpoint.get("channel_versions", {}).items():
                blob = blobs.get(names.blob_key(ns, channel, version))
                if blob is None or blob.value[0] == "empty":
                    continue
                values[channel] = self.load(blob.value)
            pending = sorted(
                (w.value for w in writes.get(cid, [])),
                key=lambda w: writes_sort_key(w[4], w[0], w[5]),
            )
            parent = rec.get("p")
            out.append(
                CheckpointTuple(
                    config={
                        "configurable": {
                            "thread_id": thread_id,
                            "checkpoint_ns": ns,
                            "checkpoint_id": cid,
                        }
                    },
                    checkpoint={**checkpoint, "channel_values": values},  # type: ignore[typeddict-item]
                    metadata=self.load(rec["m"]),
                    parent_config=(
                        {
                            "configurable": {
                                "thread_id": thread_id,
                                "checkpoint_ns": ns,
                                "checkpoint_id": parent,
                            }
                        }
                        if parent
                        else None
                    ),
                    pending_writes=[(w[0], w[1], self.load(w[2:4])) for w in pending],
                )
            )
        return out

    def threads(self) -> Flow[list[tuple[str, str]]]:
        """(thread id, namespace name) of every thread under the prefix."""
        listed: list[str] = yield Call(None, "list_namespaces")
        prefix = self.options.prefix
        found = []
        for name in listed:
            if not names.owns(prefix, name):
                continue
            text = names.decode_name(prefix, name)
            if text is None and names.is_hashed(prefix, name):
                try:
                    entry = yield Call(name, "get", (names.TID_KEY,))
                except NamespaceNotFound:
                    continue
                text = entry.value if entry is not None else None
            if text is not None:
                found.append((text, name))
        return found

    def list_tuples(
        self,
        config: RunnableConfig | None,
        filter: Mapping[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> Flow[list[CheckpointTuple]]:
        if config is not None:
            thread_id = config["configurable"]["thread_id"]
            threads = [(thread_id, self.thread_ns(thread_id)[0])]
            want_ns = config["configurable"].get("checkpoint_ns")
            want_id = get_checkpoint_id(config)
        else:
            threads = yield from self.threads()
            want_ns, want_id = None, None
        before_id = get_checkpoint_id(before) if before else None
        out: list[CheckpointTuple] = []
        for thread_id, name in threads:
            try:
                keys = yield Call(name, "keys", (names.checkpoint_pattern(want_ns),), collect=True)
            except NamespaceNotFound:
                continue
            by_ns: dict[str, list[str]] = {}
            for key in keys:
                parsed = names.parse_checkpoint_key(key)
                if parsed is not None:
                    by_ns.setdefault(parsed[0], []).append(parsed[1])
            if not by_ns:
                continue
            alive = yield Call(name, "get", (names.ALIVE_KEY,))
            if alive is None:
                yield from self.drop_expired(thread_id, name)
                continue
            for ns in sorted(by_ns):
                ids = sorted(by_ns[ns], reverse=True)
                if want_id:
                    ids = [i for i in ids if i == want_id]
                if before_id:
                    ids = [i for i in ids if i < before_id]
                for page in chunks(ids, PAGE):
                    if limit is not None and len(out) >= limit:
                        return out
                    keys_ = [names.checkpoint_key(ns, i) for i in page]
                    got = yield Call(name, "get_many", (keys_,))
                    records = []
                    for cid, key in zip(page, keys_, strict=True):
                        entry = got.get(key)
                        if entry is None:
                            continue
                        if filter:
                            metadata = self.load(entry.value["m"])
                            if not all(metadata.get(k) == v for k, v in filter.items()):
                                continue
                        records.append((cid, entry.value))
                        if limit is not None and len(out) + len(records) >= limit:
                            break
                    if records:
                        out.extend((yield from self.assemble(thread_id, ns, records, name)))
        return out[:limit] if limit is not None else out

    # ------------------------------------------------------------ maintenance
    def delete_thread(self, thread_id: str) -> Flow[None]:
        name, _ = self.thread_ns(thread_id)
        yield from self.release(thread_id)
        with contextlib.suppress(NamespaceNotFound):
            yield Call(None, "delete_namespace", (name,))
        self.forget(thread_id)

    def _thread_state(self, name: str) -> Flow[dict[str, Entry] | None]:
        try:
            snap = yield Call(name, "snapshot", ("*",))
        except NamespaceNotFound:
            return None
        entries: dict[str, Entry] = snap.entries
        return entries

    def copy_thread(self, source: str, target: str) -> Flow[None]:
        src, _ = self.thread_ns(source)
        entries = yield from self._thread_state(src)
        if not entries or entries.get(names.ALIVE_KEY) is None:
            return
        data = {
            k: e.value
            for k, e in entries.items()
            if k not in (names.ALIVE_KEY, names.TID_KEY) and not k.startswith("h/")
        }
        heads = {k: e.value for k, e in entries.items() if k.startswith("h/")}
        self.forget(target)
        # Data first, heads and the marker last: a reader never sees a head without its data.
        for page in chunks(data.items(), PAGE):
            yield from self.write(
                target, lambda name, fence, page=page: puts(name, dict(page), fence)
            )
        yield from self.write(
            target,
            lambda name, fence: puts(name, heads, fence, self._extra(target, fence)),
        )

    def delete_for_runs(self, run_ids: Iterable[str]) -> Flow[None]:
        wanted = set(run_ids)
        if not wanted:
            return
        threads = yield from self.threads()
        for thread_id, name in threads:
            entries = yield from self._thread_state(name)
            if not entries:
                continue
            doomed: set[tuple[str, str]] = set()
            for key, entry in entries.items():
                parsed = names.parse_checkpoint_key(key)
                if parsed is not None and self.load(entry.value["m"]).get("run_id") in wanted:
                    doomed.add(parsed)
            if doomed:
                yield from remove_checkpoints(self, thread_id, entries, doomed)

    def prune(self, thread_ids: Sequence[str], strategy: str) -> Flow[None]:
        if strategy not in ("keep_latest", "delete"):
            raise InvalidInput(
                f"unknown prune strategy {strategy!r}; use 'keep_latest' or 'delete'",
                field="strategy",
                value=strategy,
            )
        for thread_id in thread_ids:
            if strategy == "delete":
                yield from self.delete_thread(thread_id)
                continue
            name, _ = self.thread_ns(thread_id)
            entries = yield from self._thread_state(name)
            if not entries:
                continue
            latest: dict[str, str] = {}
            for key in entries:
                parsed = names.parse_checkpoint_key(key)
                if parsed is not None and parsed[1] > latest.get(parsed[0], ""):
                    latest[parsed[0]] = parsed[1]
            doomed = {
                parsed
                for key in entries
                if (parsed := names.parse_checkpoint_key(key)) is not None
                and parsed[1] != latest[parsed[0]]
            }
            if doomed:
                yield from remove_checkpoints(self, thread_id, entries, doomed)

    def sweep_expired(self) -> Flow[list[str]]:
        """Delete every thread whose TTL marker has expired; returns their ids."""
        threads = yield from self.threads()
        gone = []
        for thread_id, name in threads:
            try:
                alive = yield Call(name, "get", (names.ALIVE_KEY,))
            except NamespaceNotFound:
                continue
            if alive is None:
                yield from self.drop_expired(thread_id, name)
                gone.append(thread_id)
        return gone
