"""The loader gives each script only the parts of _lib.lua it names, transitively
(swarm_memory/scripts.py), and one library holds every script for FCALL."""

from __future__ import annotations

from swarm_memory.scripts import SCRIPT_NAMES, _lib_parts, _parts_for, _read, library, load


def _defined(names: list[str]) -> set[str]:
    return {n for p in _parts_for(names) for n in p.names}


def test_a_body_gets_what_it_names_and_what_that_names():
    got = _defined(["publish_events"])
    # publish_events -> events_maxlen, require_feed_room -> last_stream_id -> type_of ...
    assert {"publish_events", "events_maxlen", "require_feed_room", "last_stream_id"} <= got
    assert {"type_of", "corrupt", "stored_int", "itos", "pack", "enter"} <= got
    assert "merge_patch" not in got and "read_lock" not in got


def test_every_part_is_defined_once_and_enter_always_comes():
    _, parts = _lib_parts()
    names = [n for p in parts for n in p.names]
    assert len(names) == len(set(names))
    assert _defined([]) >= {"enter", "identity_refused"}


def test_scripts_carry_only_their_parts():
    read, write = load("read").source, load("write").source
    assert "local function merge_patch" in write and "local function merge_patch" not in read
    assert len(read) < len(write) < len(library().source)
    for name in SCRIPT_NAMES:
        script = load(name)
        assert f"local function sm_{name}(keys, args)" in script.source
        assert script.source.rstrip().endswith(f"return sm_{name}(sm_keys, sm_args)")
        assert script.function == f"sm{library().tag}_{name}"
        assert f'function_name="{script.function}"' in library().source
        assert f'function_name="{script.function}_ro", callback=sm_{name}' in library().source


def test_line_references_point_into_the_files():
    script = load("write")
    lines = script.source.split("\n")
    at = next(n for n, t in enumerate(lines, 1) if "ARG0, ITEM_ARGS, FENCE_ARGS" in t)
    body = _read("write").split("\n")
    want = next(n for n, t in enumerate(body, 1) if "ARG0, ITEM_ARGS, FENCE_ARGS" in t)
    assert script.locate(f"user_script:{at}: boom") == f"user_script:{at} (write.lua:{want}): boom"
    assert library().source.startswith(f"#!lua name={library().name}\n")


def test_a_script_that_takes_some_namespace_keys_assigns_those_and_nil_to_the_rest():
    from swarm_memory.scripts import NAMESPACE_KEYS, _key_layout

    # The standard sixteen, and scripts outside a namespace, are enter()'s to assign.
    assert _key_layout(NAMESPACE_KEYS) == ""
    assert _key_layout((*NAMESPACE_KEYS, "gmeta", "nodes")) == ""
    assert _key_layout(("stream", "ops", "opst", "bell", "meta", "senders")) == ""
    assert _key_layout(("exp", "seen")) == ""
    layout = _key_layout(("meta", "acl", "lease"))
    assert layout.startswith("K_META, K_ACL, K_LEASE = keys[1], keys[2], keys[3] ")
    nils = layout.split("K_LEASE = keys[1], keys[2], keys[3] ")[1]
    assert nils.endswith(" = nil ")
    assert set(nils.removesuffix(" = nil ").split(", ")) == {
        "K_" + k.upper() for k in NAMESPACE_KEYS if k not in ("meta", "acl", "lease")
    }
    # read.lua takes seven: its entry function assigns them before enter(keys, args, 7),
    # in the EVAL source and in the library alike.
    entry = "local function sm_read(keys, args) K_META, K_ACL, K_STATS, K_IDX, K_EXP, K_AUDIT"
    assert entry in load("read").source and entry in library().source
    assert "enter(keys, args, 7)" in load("read").source
    # write.lua takes fourteen (not the lock index and the lock doorbell), lock.lua
    # thirteen; a script with all sixteen leaves them to enter().
    write = load("write").source
    assert "K_LOCKS, K_LBELL = nil local refused = enter(keys, args, 14) " in write
    assert "local function sm_events(keys, args) local refused = enter(keys, args) " in (
        load("events").source
    )
