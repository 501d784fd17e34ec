"""The client's per-call shortcuts give what the long ways give (docs/performance.md,
"Client side, stop 22"): a write's ok reply read by index, the cached time conversions,
the direct send of a write's FCALL, and redis-py's observability skipped only while it is
off. No I/O: redis-py clients connect on their first command."""

from __future__ import annotations

import types
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio.observability.recorder as async_recorder
import redis.exceptions as rexc
import redis.observability.recorder as sync_recorder

from swarm_memory import AsyncSwarmMemory, SwarmMemory, models
from swarm_memory._drive import pack, recording_off
from swarm_memory._ops import records
from swarm_memory._ops.effects import ScriptCall
from swarm_memory._ops.records import Fields, MalformedReply
from swarm_memory.scripts import load

URL = "redis://127.0.0.1:1/0"

ITEM = [b"w", 5, 1, 12, 1796539928522, 1796539928600, 0, 70, b"", b""]
OTHER = [b"d", 0, 1, 13, 1796539928522, 1796539928601, 1796539999000, 0, b"7", b"json"]
REPLIES: list[list[Any]] = [
    [b"ok", 12, 0, 1, *ITEM, 0],
    [b"ok", 12, 1, 0, 0],
    [b"ok", 13, 0, 2, *ITEM, *OTHER, 0],
    [b"ok", 12, 0, 1, *ITEM, 0, b"left", b"over"],  # fields after it: left unread
    [b"ok", 12, 0, 1, *ITEM, 2, b"x", b"y"],  # evicted names: the general reader
    [b"ok", b"12", 0, 1, *ITEM, 0],  # counts as text: the general reader
    [b"ok", 12, 0, b"1", *ITEM, 0],
    [b"ok", 12, 0, 1, *ITEM, b"0"],
    [b"ok", 12, 0, -1, 0],
    [b"ok", 12, 0, 1, *ITEM],  # ends early
    [b"ok", 12, 0, 2, *ITEM, 0],
    [b"ok", 12, 0],
    [b"ok"],
    [b"ok", 12, 0, 1, b"\xff", *ITEM[1:], 0],  # a status that is not UTF-8
    [b"ok", b"x", 0, 1, *ITEM, 0],
]


def _outcome(reply: list[Any], *, general: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    with monkeypatch.context() as m:
        if general:
            m.setattr(records, "_write_ok_fast", lambda f: None)
        f = Fields(reply, 1, reply[0])
        try:
            result = records.write_ok(f)
        except Exception as exc:  # the same error either way
            return type(exc), str(exc)
        return result, f._pos


@pytest.mark.parametrize("reply", REPLIES, ids=range(len(REPLIES)))
def test_a_write_reply_read_by_index_is_what_the_general_reader_reads(
    reply: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = _outcome(reply, general=False, monkeypatch=monkeypatch)
    assert fast == _outcome(reply, general=True, monkeypatch=monkeypatch)


def test_the_index_reader_takes_the_common_replies_and_leaves_the_others() -> None:
    assert records._write_ok_fast(Fields(REPLIES[0], 1)) is not None
    assert records._write_ok_fast(Fields(REPLIES[2], 1)) is not None
    for reply in REPLIES[4:8]:
        assert records._write_ok_fast(Fields(reply, 1)) is None
    with pytest.raises(MalformedReply):
        records.write_ok(Fields(REPLIES[9], 1))


def test_ms_to_datetime_is_fromtimestamp_whether_kept_or_not() -> None:
    values = [0, 1, 999, 1796539928522, -1500, 253402300799999, *range(10**12, 10**12 + 1500)]
    for _ in range(2):  # the second pass hits what the first kept (and what was cleared)
        for ms in values:
            got = models.ms_to_datetime(ms)
            assert got == datetime.fromtimestamp(ms / 1000, tz=UTC)
            assert got.tzinfo is UTC
    assert len(models._MS_CACHE) <= models._MS_CACHE_MAX


def test_kept_times_are_what_parsing_gives_and_bad_ones_still_fail() -> None:
    for raw in (1796539928522, b"1796539928522", b"5", 5, b"1796539928522"):
        assert records._time(raw) == models.ms_to_datetime(int(raw))
    assert records.times(5, 5) == (models.ms_to_datetime(5),) * 2
    for bad in (5.0, b"-x", b"", "5", None, [5]):  # 5.0 == 5, which is kept: still refused
        with pytest.raises(ValueError):
            records._time(bad)
    for i in range(records._TIMES_MAX + 10):
        records._time(10**12 + i)
    assert len(records._TIMES) <= records._TIMES_MAX


@pytest.mark.parametrize(
    "raw", [0, b"0", 1796539999000, b"1796539999000", -5, b"-5", b"00", b"x", 0.0, False]
)
def test_no_expiry_is_known_as_parsing_knows_it(raw: Any) -> None:
    def parsed() -> Any:
        x = records._stored_int(raw)
        return models.ms_to_datetime(x) if x > 0 else None

    try:
        expected = parsed()
    except ValueError:
        with pytest.raises(ValueError):
            records._expiry(raw)
        return
    assert records._expiry(raw) == expected


def test_recording_off_reads_what_the_recorder_checks_first() -> None:
    names = {"_metrics_collector": None, "_collector_resolved": False}
    module = types.ModuleType("fake_recorder")
    vars(module).update(names)
    off = recording_off(module)
    assert not off()  # not resolved yet: the recorder must look
    module._collector_resolved = True  # type: ignore[attr-defined]
    assert off()
    module._metrics_collector = object()  # type: ignore[attr-defined]
    assert not off()  # on: every call recorded
    assert not recording_off(types.ModuleType("other_layout"))()


@pytest.mark.parametrize("recorder", [sync_recorder, async_recorder], ids=["sync", "async"])
def test_recording_off_knows_redis_pys_own_recorders(recorder: Any) -> None:
    off = recording_off(recorder)
    prefix = "_async_" if recorder is async_recorder else "_"
    names = vars(recorder)
    if (prefix + "collector_resolved") not in names:
        # A redis-py without the cached miss (an older 8.x): every call recorded.
        assert not off()
        return
    saved = names[prefix + "metrics_collector"], names[prefix + "collector_resolved"]
    try:
        names[prefix + "metrics_collector"], names[prefix + "collector_resolved"] = None, True
        assert off()
        names[prefix + "metrics_collector"] = object()
        assert not off()
        names[prefix + "metrics_collector"], names[prefix + "collector_resolved"] = None, False
        assert not off()
    finally:
        names[prefix + "metrics_collector"], names[prefix + "collector_resolved"] = saved


def _write_call() -> ScriptCall:
    keys = [f"sm:{{n}}:k{i}" for i in range(18)]
    args: list[str | bytes | int] = ["a", "op", 300000, 100000, 10000, 1048576, 1, 0, "put"]
    args += ["digest", "0", 256, "", 0, "P", "k", b"{}", "json", "", ""]
    return ScriptCall(load("write"), keys, args, "op")


@pytest.mark.parametrize("cls", [SwarmMemory, AsyncSwarmMemory], ids=["sync", "async"])
async def test_a_writes_direct_fcall_is_the_command_once_sends(cls: Any) -> None:
    """The common write's send (``_send``'s first branch) is byte for byte what the
    general path (``_once``) sends; the async client's goes straight to its pipe, whose
    ``call`` both reach, the sync client's through ``_direct``."""
    mem = cls.from_url(URL, agent="a")
    drv = mem._driver
    sent: list[bytes] = []

    async def ok() -> Any:
        return [b"ok"]

    def capture(command: tuple[Any, ...]) -> Any:
        sent.append(pack(command))
        return [b"ok"]

    def capture_packed(name: str, packed: bytes) -> Any:
        assert name == "FCALL"
        sent.append(packed)
        return ok()

    if cls is SwarmMemory:
        assert drv.pipe is None
        drv._direct = capture
    else:
        assert drv.pipe is not None
        drv.pipe.call = capture_packed
    call = _write_call()
    args = call.script.identity_args(call.args, drv.settings.key_prefix)
    try:
        for send in (
            lambda: drv._send(call, args, functions=True),
            lambda: drv._once(
                call, len(call.keys), [*call.keys, *args], functions=True, readonly=False
            ),
        ):
            reply = send()
            if cls is AsyncSwarmMemory:
                reply = await reply
            assert reply == [b"ok"]
        assert len(sent) == 2
        assert sent[0] == sent[1]
        # (after the argument count: FCALL, the function, its 18 keys)
        head = pack(("FCALL", call.script.function, 18)).split(b"\r\n", 1)[1]
        assert sent[0].split(b"\r\n", 1)[1].startswith(head)
    finally:
        close = mem.close()
        if close is not None:
            await close


def _read_call() -> ScriptCall:
    keys = [f"sm:{{n}}:k{i}" for i in range(9)]
    return ScriptCall(load("read"), keys, ["a", 10000, "get"], None, True)


DENIED = [b"denied", b"none"]
READ_CASES: dict[str, dict[str, Any]] = {
    "ok": {"FCALL_RO": [b"ok", 0, b""]},
    "denied, audited": {"FCALL_RO": DENIED, "FCALL": [b"denied", b"none", 1]},
    "denied, refused": {"FCALL_RO": DENIED, "FCALL": rexc.NoPermissionError("NOPERM no")},
    "no FCALL_RO": {"FCALL_RO": rexc.ResponseError("unknown command 'FCALL_RO'"), "FCALL": [b"x"]},
    "error": {"FCALL_RO": rexc.ResponseError("ERR something else")},
}


@pytest.mark.parametrize("case", list(READ_CASES))
@pytest.mark.parametrize("cls", [SwarmMemory, AsyncSwarmMemory], ids=["sync", "async"])
async def test_a_reads_direct_fcall_ro_sends_what_the_general_path_sends(
    cls: Any, case: str
) -> None:
    """With FCALL_RO known to work, a read's first send skips _once; whatever the server
    answers (a denial audited or refused, FCALL_RO unknown after all, an error), the
    commands sent, the result and what the driver learnt are the general path's."""
    answers = READ_CASES[case]
    outcomes = []
    for known in (None, True):  # None: the general path (learning); True: the shortcut
        mem = cls.from_url(URL, agent="a")
        drv = mem._driver
        sent: list[tuple[Any, ...]] = []

        def answer(command: tuple[Any, ...], sent: list[tuple[Any, ...]] = sent) -> Any:
            sent.append(command)
            reply = answers[command[0]]
            if isinstance(reply, Exception):
                raise reply
            return reply

        def capture(command: tuple[Any, ...]) -> Any:
            if cls is SwarmMemory:
                return answer(command)

            async def later() -> Any:
                return answer(command)

            return later()

        drv._direct = capture
        drv.read_only_scripts = known
        call = _read_call()
        args = call.script.identity_args(call.args, drv.settings.key_prefix)
        try:
            result: Any = drv._send(call, args, functions=True)
            if cls is AsyncSwarmMemory:
                result = await result
        except rexc.ResponseError as exc:
            result = (type(exc), str(exc))
        finally:
            close = mem.close()
            if close is not None:
                await close
        # What it knows after the call: True where the general path, starting unsure,
        # learnt nothing (an error) or learnt what the shortcut started from.
        learnt = True if drv.read_only_scripts is None else drv.read_only_scripts
        outcomes.append((sent, result, learnt))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0][0][:2] == ("FCALL_RO", _read_call().script.function + "_ro")
