"""TLS: ``rediss://`` URLs with ``ssl_ca_certs`` (and client certificates where the
server asks for them) work on the sync and async clients; a certificate the client does
not trust is a TransportError that says the write was not sent, never OutcomeUnknown.

The certificates are made here with openssl (a throwaway CA, a server certificate for
127.0.0.1, a client certificate); the redis-server the fixture starts listens on a plain
port (for its readiness probe) and a TLS port."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from swarm_memory import AsyncSwarmMemory, OutcomeUnknown, Settings, SwarmMemory, TransportError
from tests.servers import RedisServer, free_port

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@dataclass
class Tls:
    dir: Path
    port: int

    def url(self, ca: str = "ca.pem", *, client_cert: bool = False) -> str:
        url = f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.dir / ca}"
        if client_cert:
            url += f"&ssl_certfile={self.dir / 'client.pem'}&ssl_keyfile={self.dir / 'client.key'}"
        return url


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_certs(d: Path) -> None:
    for ca in ("ca", "other-ca"):
        _openssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key",
                 "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN={ca}")  # fmt: skip
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl(d, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", "-subj", "/CN=127.0.0.1")  # fmt: skip
        _openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                 "-extfile", "ext.cnf")  # fmt: skip


@pytest.fixture(scope="module", params=["optional", "yes"], ids=["server-cert", "client-cert"])
def tls(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    d = tmp_path_factory.mktemp("tls")
    _make_certs(d)
    port = free_port()
    args = ["--tls-port", str(port), "--tls-cert-file", str(d / "server.pem"),
            "--tls-key-file", str(d / "server.key"), "--tls-ca-cert-file", str(d / "ca.pem"),
            "--tls-auth-clients", request.param]  # fmt: skip
    with RedisServer(extra_args=args):
        yield Tls(d, port)


def _settings() -> Settings:
    return Settings(key_prefix="tls" + uuid.uuid4().hex[:8], connect_timeout=2, retry_attempts=2)


def test_sync_client_over_tls(tls: Tls):
    mem = SwarmMemory.from_url(tls.url(client_cert=True), agent="a", settings=_settings())
    try:
        mem.create_namespace("team")
        assert mem.namespace("team").put("k", {"v": 1}).version == 1
        entry = mem.namespace("team").get("k")
        assert entry is not None and entry.value == {"v": 1}
    finally:
        mem.close()


async def test_async_client_over_tls(tls: Tls):
    mem = AsyncSwarmMemory.from_url(tls.url(client_cert=True), agent="a", settings=_settings())
    try:
        await mem.create_namespace("team")
        assert (await mem.namespace("team").incr("n")) == 1
        wire = mem._driver.pipe.wire  # type: ignore[union-attr]
        assert wire is not None and not wire.closed  # the script calls' pipelined TLS socket
    finally:
        await mem.close()


async def test_async_untrusted_certificate_is_not_outcome_unknown(tls: Tls):
    """The pipelined channel connects through redis-py's TLS handshake: a refused
    certificate is "not sent", as on the sync client."""
    import redis.exceptions

    from swarm_memory._drive import _failed_connecting, pack

    mem = AsyncSwarmMemory.from_url(tls.url("other-ca.pem"), agent="a", settings=_settings())
    try:
        with pytest.raises(TransportError) as info:
            await mem.namespace("team").put("k", 1)
        assert not isinstance(info.value, OutcomeUnknown)
        assert "not sent" in info.value.message
        pipe = mem._driver.pipe
        assert pipe is not None
        with pytest.raises(redis.exceptions.ConnectionError) as raw:  # the channel's own
            await pipe.call("EVAL", pack(("EVAL", "return 1", 0)))
        assert _failed_connecting(raw.value)
    finally:
        await mem.close()


def test_an_untrusted_server_certificate_is_not_outcome_unknown(tls: Tls):
    mem = SwarmMemory.from_url(tls.url("other-ca.pem"), agent="a", settings=_settings())
    try:
        with pytest.raises(TransportError) as info:
            mem.namespace("team").put("k", 1)
        assert not isinstance(info.value, OutcomeUnknown)
        assert "not sent" in info.value.message
        assert "certificate" in info.value.message.lower()
    finally:
        mem.close()
