"""A crash that loses acknowledged writes must not rewind revisions or fencing tokens
silently (DESIGN.md decision 3), and a restart that lost nothing must not cry wolf.

The server is killed with SIGKILL under load and restarted on the same port and files.
A SIGKILL alone loses nothing on a healthy disk (the AOF's write() precedes each reply
and the kernel keeps what was written), so the lossy case restarts from an older RDB
snapshot, taken mid-run: exactly what a lost AOF tail or a lagging replica's promotion
leaves behind (the acknowledged writes after the snapshot are gone, and new writes
would reuse their revisions and the lock counter's values).

Each run prints acknowledged / lost writes, the revisions a watcher saw, and tokens.
- Lossy restart: the watcher gets HistoryRewound (never events with reused numbers),
  no fencing token is issued twice, and the lost holder's fenced write is refused.
- Lossless restart (appendfsync everysec, SIGKILL): the watcher goes on without an
  error and receives the writes made after the restart; tokens go on increasing.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from pathlib import Path

import pytest

from swarm_memory import (
    FencingError,
    HistoryRewound,
    Settings,
    SwarmMemory,
    SwarmMemoryError,
)
from tests.servers import RedisServer

NS = "load"


class Load(threading.Thread):
    """Puts k0, k1, ... until stopped, recording what was acknowledged."""

    def __init__(self, url: str, settings: Settings) -> None:
        super().__init__(name="restart-writer", daemon=True)
        self.mem = SwarmMemory.from_url(url, agent="w", settings=settings)
        self.ns = self.mem.namespace(NS)
        self.acked: list[tuple[int, int]] = []  # (i, mod_revision)
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            try:
                self.acked.append((i, self.ns.put(f"k{i}", i).mod_revision))
            except SwarmMemoryError:
                time.sleep(0.02)  # the server is down: the writer retries later
            i += 1

    def finish(self) -> None:
        self.stop.set()
        self.join(20)
        self.mem.close()


def _settings() -> Settings:
    return Settings(
        key_prefix="rs" + uuid.uuid4().hex[:8],
        socket_timeout=1.0,
        connect_timeout=0.5,
        retry_attempts=2,
        watch_poll=0.1,
    )


def _drain(watch: object, seconds: float) -> tuple[list[int], BaseException | None]:
    """Revisions the watch delivers within ``seconds``, and the error that ended it."""
    revisions: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            event = watch.get(0.1)  # type: ignore[attr-defined]
        except SwarmMemoryError as exc:
            return revisions, exc
        if event is not None:
            revisions.append(event.revision)
    return revisions, None


@pytest.mark.parametrize("lossy", [True, False], ids=["older-snapshot", "sigkill-everysec"])
def test_restart_never_reuses_revisions_or_tokens_silently(lossy: bool):
    args = ["--appendonly", "no" if lossy else "yes", "--appendfsync", "everysec"]
    with RedisServer(extra_args=args) as server:
        settings = _settings()
        mem = SwarmMemory.from_url(server.url, agent="planner", settings=settings)
        holder_a = SwarmMemory.from_url(server.url, agent="a", settings=settings)
        mem.create_namespace(NS)
        ns = mem.namespace(NS)
        watch = ns.watch(since=0)
        load = Load(server.url, settings)
        load.start()
        time.sleep(0.4)
        snapshot_dir: Path | None = None
        if lossy:
            raw = server.client()
            raw.save()  # the state the restart will come back to
            raw.close()
            assert server.dir is not None
            snapshot_dir = server.dir / "kept"
            snapshot_dir.mkdir()
            shutil.copy(server.dir / "dump.rdb", snapshot_dir / "dump.rdb")
        time.sleep(0.4)  # acknowledged writes after the snapshot: these get lost
        lock_a = holder_a.namespace(NS).lock("L", ttl=30)
        token_a = lock_a.acquire()
        seen_before, error = _drain(watch, 0.3)
        assert error is None and seen_before

        def put_back_the_snapshot(workdir: Path) -> None:
            if snapshot_dir is not None:
                shutil.copy(snapshot_dir / "dump.rdb", workdir / "dump.rdb")

        acked_before_crash = len(load.acked)
        server.crash_and_restart(put_back_the_snapshot)
        time.sleep(1.0)  # the writer goes on against the restarted server
        seen_after, error = _drain(watch, 2.0)
        load.finish()

        raw = server.client()
        keys_alive = {
            i for i, _ in load.acked if raw.exists(f"{settings.key_prefix}:{{{NS}}}:e:k{i}")
        }
        raw.close()
        lost = len(load.acked) - len(keys_alive)
        token_b = (
            mem.as_agent("b").namespace(NS).lock("L", ttl=30, wait=5).acquire() if lossy else None
        )
        print(
            f"\nrestart ({'older snapshot' if lossy else 'sigkill, everysec'}): acknowledged "
            f"{len(load.acked)} ({acked_before_crash} before the crash), lost {lost}; "
            f"watcher saw revisions {min(seen_before)}..{max(seen_before + seen_after)}, "
            f"then {type(error).__name__ if error else 'no error'}; tokens {token_a} -> {token_b}"
        )
        if lossy:
            assert lost > 0, "the scenario lost nothing: it tests nothing"
            assert isinstance(error, HistoryRewound), "a rewound history passed silently"
            # Nothing delivered after the crash may carry a revision the watcher already had.
            assert not set(seen_after) & set(seen_before)
            assert token_b is not None and int(token_b) > int(token_a)  # never issued twice
            with pytest.raises(FencingError):  # the lost holder's token fences nothing
                holder_a.namespace(NS).put("guarded", 1, fence=token_a)
        else:
            assert lost == 0
            assert error is None, f"a restart that lost nothing raised {error!r}"
            assert seen_after and min(seen_after) > max(seen_before)  # it went on
            token_c = mem.namespace(NS).lock("M", ttl=30).acquire()
            assert int(token_c) > int(token_a)
        watch.close()
        mem.close()
        holder_a.close()
