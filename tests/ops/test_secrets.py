"""Secrets are never printed (issue 13): the Redis password in a URL, an ACL user's
generated passwords (``acl apply`` / ``acl rotate``), and the TLS key's passphrase
(``ssl_password``) appear in no repr or str of a client or settings, no error (bad URL,
unreachable server, refused credentials, NOPERM), no log record at DEBUG, no CLI output
(every command, success and failure, ``doctor`` and ``acl plan`` included) and no
exporter output. ``acl plan`` never prints passwords: they exist only in the
``--secrets-dir`` files (mode 0600). TLS file paths are not secrets and may be shown."""

from __future__ import annotations

import json
import logging
import secrets
import traceback
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result

from swarm_memory import AsyncSwarmMemory, Settings, SwarmMemory, acl, errors
from swarm_memory.cli import cli
from swarm_memory.exporter import serve
from tests.servers import RedisServer, free_port

PW = "pw-" + secrets.token_hex(12)  # the default user's (requirepass)
KEY_PW = "keypw-" + secrets.token_hex(12)  # a TLS key passphrase (ssl_password)


@dataclass
class Secured:
    server: RedisServer
    agent_pw: dict[str, str]
    secrets_dir: Path

    @property
    def url(self) -> str:
        return f"redis://default:{PW}@127.0.0.1:{self.server.port}/0"

    def agent_url(self, agent: str) -> str:
        return f"redis://{agent}:{self.agent_pw[agent]}@127.0.0.1:{self.server.port}/0"

    def all_secrets(self) -> list[str]:
        found = [PW, KEY_PW, *self.agent_pw.values()]
        found += [p.read_text().strip() for p in self.secrets_dir.glob("*.password")]
        return found


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    with RedisServer() as server:
        probe = server.client()
        probe.config_set("requirepass", PW)  # after start: the readiness probe has none
        probe.close()
        url = f"redis://default:{PW}@127.0.0.1:{server.port}/0"
        with SwarmMemory.from_url(url, agent="boss") as admin:
            admin.create_namespace(
                "team", default_permission="none", permissions={"boss": "admin", "w1": "write"}
            )
            admin.create_namespace("secret", default_permission="none")
            admin.namespace("team").put("k", 1)
            passwords = acl.apply(admin.redis, acl.plan(acl.read_maps(admin.redis)))
        yield Secured(server, passwords, tmp_path_factory.mktemp("secrets"))


def assert_clean(text: str, secured: Secured) -> None:
    for secret in secured.all_secrets():
        assert secret not in text


def everything_about(exc: BaseException) -> str:
    """str, repr, args and the whole chained traceback of an error."""
    parts = [str(exc), repr(exc), repr(exc.args), *traceback.format_exception(exc)]
    return "\n".join(parts)


def test_clients_and_settings_never_show_the_password(secured: Secured) -> None:
    settings = Settings(redis_url=secured.url + f"?ssl_password={KEY_PW}")
    texts = [repr(settings), str(settings), repr(Settings(redis_url=secured.url))]
    with SwarmMemory.from_url(secured.url, agent="boss") as mem:
        ns = mem.namespace("team")
        texts += [repr(mem), str(mem), repr(ns), repr(ns.lock("L")), repr(mem.settings)]
        texts += [repr(mem.inbox())]
    with SwarmMemory.from_url(secured.agent_url("w1"), agent="w1") as w1:
        texts += [repr(w1), str(w1), repr(w1.namespace("team"))]
    texts.append(repr(AsyncSwarmMemory.from_url(secured.url, agent="boss")))
    assert_clean("\n".join(texts), secured)


def _errors(secured: Secured) -> list[BaseException]:
    port = secured.server.port
    found: list[BaseException] = []
    fast = Settings(retry_attempts=1, connect_timeout=1)
    attempts = [
        lambda: SwarmMemory.from_url(f"redis://u:{PW}@127.0.0.1:notaport/0", agent="a"),
        lambda: SwarmMemory.from_url(f"redis://u:{PW}@[::1/0", agent="a"),
        lambda: SwarmMemory.from_url(f"redis://127.0.0.1:{port}/0?password={PW}&db=x", agent="a"),
        lambda: (
            SwarmMemory.from_url(
                f"redis://u:{PW}@127.0.0.1:{free_port()}/0", agent="a", settings=fast
            )
            .namespace("team")
            .get("k")
        ),
        lambda: (
            SwarmMemory.from_url(
                f"redis://default:{PW}x@127.0.0.1:{port}/0", agent="a", settings=fast
            )
            .namespace("team")
            .get("k")
        ),
        lambda: (
            SwarmMemory.from_url(secured.agent_url("w1"), agent="w1", settings=fast)
            .namespace("secret")
            .get("k")
        ),
        lambda: (
            SwarmMemory.from_url(secured.agent_url("w1"), agent="boss", settings=fast)
            .namespace("team")
            .put("k", 2)
        ),
    ]
    for attempt in attempts:
        with pytest.raises(errors.SwarmMemoryError) as caught:
            attempt()
        found.append(caught.value)
    return found


def test_errors_and_debug_logs_never_show_the_password(
    secured: Secured, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        found = _errors(secured)
    kinds = {type(e).__name__ for e in found}
    assert {"InvalidURL", "TransportError", "PermissionDenied", "IdentityMismatch"} <= kinds
    assert_clean("\n".join(everything_about(e) for e in found), secured)
    assert_clean(caplog.text, secured)
    assert_clean("\n".join(repr(r.args) + repr(r.__dict__) for r in caplog.records), secured)


def _run(args: list[str], url: str, **env: str) -> Result:
    result = CliRunner().invoke(cli, args, env={"SWARM_MEMORY_REDIS_URL": url, **env})
    return result


# Every CLI command, with arguments that work on the fixture's data.
COMMANDS: list[list[str]] = [
    ["doctor"],
    ["-o", "json", "doctor"],
    ["ns", "list"],
    ["ns", "info", "team"],
    ["get", "team", "k"],
    ["put", "team", "k2", "2"],
    ["ls", "team"],
    ["history", "team", "k"],
    ["audit", "team"],
    ["stats"],
    ["locks", "team"],
    ["agents"],
    ["inbox", "ls"],
    ["export", "team"],
    ["acl", "plan"],
    ["acl", "plan", "--check"],
    ["watch", "team", "--since", "0", "--count", "1"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_cli_output_never_shows_a_password(secured: Secured, args: list[str]) -> None:
    ok = _run(args, secured.url, SWARM_MEMORY_AGENT="boss")
    assert ok.exit_code in (0, 7), (args, ok.output)  # 7: doctor's warnings, a drift
    as_agent = _run(args, secured.agent_url("w1"), SWARM_MEMORY_AGENT="w1")
    unreachable = _run(args, f"redis://u:{PW}@127.0.0.1:{free_port()}/0")
    refused = _run(args, f"redis://default:{PW}x@127.0.0.1:{secured.server.port}/0")
    bad = _run(args, f"redis://u:{PW}@127.0.0.1:notaport/0")
    for result in (unreachable, refused, bad):
        assert result.exit_code != 0, (args, result.output)
    for result in (ok, as_agent, unreachable, refused, bad):
        assert_clean(result.output + (result.stderr or ""), secured)
        assert_clean(everything_about(result.exception) if result.exception else "", secured)


def test_acl_apply_and_rotate_write_passwords_only_to_files(secured: Secured) -> None:
    target = secured.secrets_dir
    with SwarmMemory.from_url(secured.url, agent="boss") as admin:
        admin.namespace("team").grant({"w9": "read"})
    applied = _run(["acl", "apply", "--secrets-dir", str(target)], secured.url)
    assert applied.exit_code == 0, applied.output
    new = (target / "w9.password").read_text().strip()
    assert (target / "w9.password").stat().st_mode & 0o077 == 0
    rotated = _run(["acl", "rotate", "w1", "--secrets-dir", str(target)], secured.url)
    assert rotated.exit_code == 0, rotated.output
    rotated_pw = (target / "w1.password").read_text().strip()
    finished = _run(["acl", "rotate", "w1", "--finish", "--secrets-dir", str(target)], secured.url)
    assert finished.exit_code == 0, finished.output
    secured.agent_pw["w1"] = rotated_pw
    plan = _run(["acl", "plan"], secured.url)
    assert ">" not in plan.output.replace("->", "")  # no ">password" rule is printed
    for result in (applied, rotated, finished, plan):
        assert new not in result.output and rotated_pw not in result.output
        assert_clean(result.output, secured)


def test_exporter_output_and_labels_never_show_the_password(secured: Secured) -> None:
    exporter = serve(secured.url, port=0, addr="127.0.0.1")
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}/metrics", timeout=10)
        text = body.read().decode()
    finally:
        exporter.close()
    assert "swarm_memory_redis_up 1.0" in text
    assert_clean(text, secured)
    down = serve(f"redis://u:{PW}@127.0.0.1:{free_port()}/0", port=0, addr="127.0.0.1")
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{down.port}/metrics", timeout=20)
        text = body.read().decode()
    finally:
        down.close()
    assert "swarm_memory_redis_up 0.0" in text
    assert_clean(text, secured)


def test_doctor_json_names_the_server_without_its_password(secured: Secured) -> None:
    result = _run(["-o", "json", "doctor"], secured.url)
    report: dict[str, Any] = json.loads(result.stdout)
    assert str(secured.server.port) in json.dumps(report)  # it does say which server
    assert_clean(json.dumps(report), secured)


def test_cli_commands_that_change_things_never_show_a_password(
    secured: Secured, tmp_path: Path
) -> None:
    """The writing commands, in an order where each succeeds, then each against an
    unreachable server and with refused credentials."""
    dump = tmp_path / "scratch.jsonl"
    steps: list[list[str]] = [
        ["ns", "create", "scratch"],
        ["put", "scratch", "a", '{"x": 1}'],
        ["ns", "grant", "scratch", "w1=read"],
        ["ns", "revoke", "-y", "scratch", "w1"],
        ["export", "scratch", str(dump)],
        ["delete", "-y", "scratch", "a"],
        ["import", "-y", str(dump)],
        ["ns", "clear", "-y", "scratch"],
        ["ns", "delete", "-y", "scratch"],
        ["inbox", "rm", "-y", "w1"],
        ["demo", "--agents", "2", "--tasks", "5"],
    ]
    with SwarmMemory.from_url(secured.url, agent="boss") as boss:
        boss.send("w1", "to be removed")
    for args in steps:
        agent = "w1" if args[0] == "inbox" else "boss"  # only its owner deletes an inbox
        ok = _run(args, secured.url, SWARM_MEMORY_AGENT=agent)
        assert ok.exit_code == 0, (args, ok.output)
        unreachable = _run(args, f"redis://u:{PW}@127.0.0.1:{free_port()}/0")
        refused = _run(args, f"redis://default:{PW}x@127.0.0.1:{secured.server.port}/0")
        for result in (ok, unreachable, refused):
            assert_clean(result.output + (result.stderr or ""), secured)
    assert_clean(dump.read_text(), secured)
    w9_password = (secured.secrets_dir / "w9.password").read_text().strip()
    w9 = secured.server.client(username="w9", password=w9_password)
    assert w9.ping()
    revoked = _run(["acl", "revoke", "w9"], secured.url)
    assert revoked.exit_code == 0, revoked.output
    assert_clean(revoked.output, secured)
    with pytest.raises(redis.exceptions.ConnectionError):  # closed; its password is gone
        w9.ping()
    w9.close()
