"""Tests for the HTTP backend's TLS, connection limit and secret headers, against local servers."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from structlog.testing import capture_logs

from esm.backends.http import HeaderSource, HttpBackend
from esm.errors import BackendError
from esm.model import Invocation, InvokeResult, ResultKind
from tests.conftest import free_port

pytestmark = pytest.mark.anyio

ARN = "arn:aws:lambda:us-east-1:000000000000:function:orders"
ENV_SECRET = "env-secret-7f3a9c"
FILE_SECRET = "file-secret-41b2d8"
ROTATED_SECRET = "rotated-secret-c6e015"
LITERAL_SECRET = "literal-secret-9d0e77"
SECRETS = (ENV_SECRET, FILE_SECRET, ROTATED_SECRET, LITERAL_SECRET)


def make_invocation(timeout: float = 5.0) -> Invocation:
    return Invocation(
        payload=orjson.dumps({"Records": []}),
        request_id=str(uuid.uuid4()),
        function_name="orders",
        function_arn=ARN,
        timeout=timeout,
        deadline=time.time() + timeout,
    )


# ---------------------------------------------------------------------------------------------
# A throwaway PKI: one CA that signs the server's and the client's certificates


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    encrypted_client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if password is None
        else serialization.BestAvailableEncryption(password)
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=0), critical=True
        ).add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        assert usage is not None
        builder = (
            builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName(subject)]
                ),
                critical=False,
            )
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("esm test CA", ca_key, None, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate(
        "localhost", server_key, ca, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _certificate(
        "esm-client", client_key, ca, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    files = {
        "ca": ca.public_bytes(serialization.Encoding.PEM),
        "server_cert": server.public_bytes(serialization.Encoding.PEM),
        "server_key": _key_pem(server_key),
        "client_cert": client.public_bytes(serialization.Encoding.PEM),
        "client_key": _key_pem(client_key),
        "encrypted_client_key": _key_pem(client_key, b"passphrase"),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = directory / f"{name}.pem"
        paths[name].write_bytes(data)
    return Pki(**paths)


# ---------------------------------------------------------------------------------------------
# Local servers


@dataclass
class Seen:
    headers: dict[str, str]
    peer: Any
    client_subject: Any


@dataclass
class Server:
    url: str
    seen: list[Seen] = field(default_factory=list)
    gather: int = 1
    """Requests to /gather are answered once this many have arrived."""
    gathered: anyio.Event = field(default_factory=anyio.Event)


def server_tls(pki: Pki, *, require_client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki.ca)
    return context


@asynccontextmanager
async def serve(tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    server = Server(url="")

    async def handle(request: web.Request) -> web.StreamResponse:
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport else None
        certificate = transport.get_extra_info("peercert") if transport else None
        subject = dict(item[0] for item in certificate["subject"]) if certificate else None
        server.seen.append(Seen(dict(request.headers), peer, subject))
        if request.path == "/gather":
            if len(server.seen) >= server.gather:
                server.gathered.set()
            with anyio.fail_after(5):
                await server.gathered.wait()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/{name}", handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.url = f"{'https' if tls else 'http'}://{host}:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.fixture
def make_backend() -> Iterator[Callable[..., HttpBackend]]:
    created: list[HttpBackend] = []

    def create(url: str, **kwargs: Any) -> HttpBackend:
        kwargs.setdefault("timeout", 5.0)
        kwargs.setdefault("function_name", "orders")
        backend = HttpBackend(url, **kwargs)
        created.append(backend)
        return backend

    yield create
    for backend in created:
        assert backend._session is None or backend._session.closed


async def invoke_into(backend: HttpBackend, results: list[InvokeResult]) -> None:
    results.append(await backend.invoke(make_invocation()))


async def invoke_once(backend: HttpBackend) -> InvokeResult:
    try:
        return await backend.invoke(make_invocation())
    finally:
        await backend.aclose()


# ---------------------------------------------------------------------------------------------
# TLS


async def test_https_server_is_verified_with_the_ca_bundle(
    pki: Pki, make_backend: Callable[..., HttpBackend]
) -> None:
    async with serve(server_tls(pki)) as server:
        backend = make_backend(f"{server.url}/ok", ca_bundle=str(pki.ca))
        result = await invoke_once(backend)

    assert result.kind is ResultKind.SUCCESS, result.error
    assert result.response == {"ok": True}
    assert len(server.seen) == 1


async def test_https_server_not_signed_by_a_trusted_ca_is_a_system_error(
    pki: Pki, make_backend: Callable[..., HttpBackend]
) -> None:
    async with serve(server_tls(pki)) as server:
        backend = make_backend(f"{server.url}/ok")
        result = await invoke_once(backend)

    assert result.kind is ResultKind.SYSTEM_ERROR
    assert result.status_code == 0
    assert "certificate verify failed" in (result.error or "")
    assert server.seen == []


async def test_verify_tls_off_accepts_any_server_certificate(
    pki: Pki, make_backend: Callable[..., HttpBackend]
) -> None:
    async with serve(server_tls(pki)) as server:
        with capture_logs() as logs:
            backend = make_backend(f"{server.url}/ok", verify_tls=False)
        result = await invoke_once(backend)

    assert result.kind is ResultKind.SUCCESS, result.error
    assert [entry["event"] for entry in logs] == ["TLS certificate verification is off"]


async def test_mutual_tls_presents_the_client_certificate(
    pki: Pki, make_backend: Callable[..., HttpBackend]
) -> None:
    async with serve(server_tls(pki, require_client_cert=True)) as server:
        backend = make_backend(
            f"{server.url}/ok",
            ca_bundle=str(pki.ca),
            client_cert=str(pki.client_cert),
            client_key=str(pki.client_key),
        )
        result = await invoke_once(backend)

    assert result.kind is ResultKind.SUCCESS, result.error
    [seen] = server.seen
    assert seen.client_subject == {"commonName": "esm-client"}


async def test_mutual_tls_without_a_client_certificate_is_a_system_error(
    pki: Pki, make_backend: Callable[..., HttpBackend]
) -> None:
    async with serve(server_tls(pki, require_client_cert=True)) as server:
        backend = make_backend(f"{server.url}/ok", ca_bundle=str(pki.ca))
        result = await invoke_once(backend)

    assert result.kind is ResultKind.SYSTEM_ERROR
    assert server.seen == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ca_bundle": "{missing}"}, "cannot load ca_bundle {missing}: No such file"),
        ({"ca_bundle": "{pki.server_key}"}, "cannot load ca_bundle {pki.server_key}"),
        ({"client_key": "{pki.client_key}"}, "client_key needs client_cert"),
        (
            {"client_cert": "{pki.client_cert}", "client_key": "{missing}"},
            "cannot load the client certificate from {pki.client_cert} and {missing}",
        ),
        (
            # The key of another certificate.
            {"client_cert": "{pki.client_cert}", "client_key": "{pki.server_key}"},
            "cannot load the client certificate",
        ),
        (
            {"client_cert": "{pki.client_cert}", "client_key": "{pki.encrypted_client_key}"},
            "the key is encrypted",
        ),
        (
            # The key must then be in the certificate file.
            {"client_cert": "{pki.client_cert}"},
            "cannot load the client certificate from {pki.client_cert}:",
        ),
    ],
)
def test_unusable_tls_files_are_refused_at_creation(
    pki: Pki, tmp_path: Path, options: dict[str, str], message: str
) -> None:
    values = {"pki": pki, "missing": tmp_path / "missing.pem"}
    files: dict[str, Any] = {name: value.format(**values) for name, value in options.items()}

    with pytest.raises(BackendError) as raised:
        HttpBackend("https://127.0.0.1:1/", timeout=1, function_name="orders", **files)

    assert message.format(**values) in str(raised.value)
    assert str(raised.value).startswith("function 'orders': ")


@pytest.mark.parametrize(
    "options",
    [{"ca_bundle": "/etc/ca.pem"}, {"client_cert": "/etc/cert.pem"}, {"verify_tls": False}],
)
def test_tls_settings_on_a_plain_http_url_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(BackendError, match="apply only to https:// urls"):
        HttpBackend("http://127.0.0.1:1/", timeout=1, function_name="orders", **options)


# ---------------------------------------------------------------------------------------------
# Connection limit


@pytest.mark.parametrize(("limit", "connections"), [(1, 1), (5, 5)])
async def test_max_connections_bounds_the_pool(
    make_backend: Callable[..., HttpBackend], limit: int, connections: int
) -> None:
    async with serve() as server:
        # The server holds every request until `limit` of them are in: with a smaller pool
        # than that the invocations would time out instead of succeeding.
        server.gather = limit
        backend = make_backend(f"{server.url}/gather", max_connections=limit)
        results: list[InvokeResult] = []
        try:
            async with anyio.create_task_group() as group:
                for _ in range(5):
                    group.start_soon(invoke_into, backend, results)
        finally:
            await backend.aclose()

    assert [result.kind for result in results] == [ResultKind.SUCCESS] * 5
    assert len(server.seen) == 5
    # One connection is reused by every request; five are open at once.
    assert len({seen.peer for seen in server.seen}) == connections


@pytest.mark.parametrize("limit", [0, -1])
def test_max_connections_must_be_positive(limit: int) -> None:
    with pytest.raises(BackendError, match="max_connections must be at least 1"):
        HttpBackend("http://127.0.0.1:1/", timeout=1, function_name="f", max_connections=limit)


# ---------------------------------------------------------------------------------------------
# Headers from the environment and from files


def test_a_header_source_takes_exactly_one_origin() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        HeaderSource()
    with pytest.raises(ValueError, match="exactly one"):
        HeaderSource(env="TOKEN", file="/run/secrets/token")


async def test_header_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, make_backend: Callable[..., HttpBackend]
) -> None:
    monkeypatch.setenv("ESM_TEST_TOKEN", ENV_SECRET + "\n")
    async with serve() as server:
        backend = make_backend(
            f"{server.url}/ok",
            headers={
                "Authorization": HeaderSource(env="ESM_TEST_TOKEN", prefix="Bearer "),
                "X-Static": "plain",
            },
        )
        result = await invoke_once(backend)

    assert result.kind is ResultKind.SUCCESS
    [seen] = server.seen
    assert seen.headers["Authorization"] == f"Bearer {ENV_SECRET}"
    assert seen.headers["X-Static"] == "plain"


def test_a_missing_environment_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ESM_TEST_ABSENT", raising=False)

    with pytest.raises(BackendError) as raised:
        HttpBackend(
            "http://127.0.0.1:1/",
            timeout=1,
            function_name="orders",
            headers={"Authorization": HeaderSource(env="ESM_TEST_ABSENT")},
        )

    assert str(raised.value) == (
        "function 'orders': header 'Authorization': environment variable "
        "'ESM_TEST_ABSENT' is not set"
    )


async def test_header_file_is_read_again_when_rotated(
    tmp_path: Path, make_backend: Callable[..., HttpBackend]
) -> None:
    secret = tmp_path / "token"
    secret.write_text(FILE_SECRET + "\n")
    async with serve() as server:
        backend = make_backend(
            f"{server.url}/ok",
            headers={"Authorization": HeaderSource(file=str(secret), prefix="Bearer ")},
            secret_check_interval=0,
        )
        try:
            first = await backend.invoke(make_invocation())
            # Rotated as Kubernetes does it: a new file atomically takes the old one's place.
            staged = tmp_path / "token.new"
            staged.write_text(ROTATED_SECRET + "\n")
            os.replace(staged, secret)
            with capture_logs() as logs:
                second = await backend.invoke(make_invocation())
                third = await backend.invoke(make_invocation())
        finally:
            await backend.aclose()

    assert [first.kind, second.kind, third.kind] == [ResultKind.SUCCESS] * 3
    assert [seen.headers["Authorization"] for seen in server.seen] == [
        f"Bearer {FILE_SECRET}",
        f"Bearer {ROTATED_SECRET}",
        f"Bearer {ROTATED_SECRET}",
    ]
    # Logged once, for the change, not on every check.
    assert logs == [
        {
            "event": "header file changed, using its new value",
            "header": "Authorization",
            "file": str(secret),
            "log_level": "info",
        }
    ]


async def test_header_file_rewritten_in_place_is_read_again(
    tmp_path: Path, make_backend: Callable[..., HttpBackend]
) -> None:
    secret = tmp_path / "token"
    secret.write_text("short")
    async with serve() as server:
        backend = make_backend(
            f"{server.url}/ok",
            headers={"X-Api-Key": HeaderSource(file=str(secret))},
            secret_check_interval=0,
        )
        try:
            await backend.invoke(make_invocation())
            secret.write_text("a longer value\r\n")
            await backend.invoke(make_invocation())
        finally:
            await backend.aclose()

    assert [seen.headers["X-Api-Key"] for seen in server.seen] == ["short", "a longer value"]


async def test_header_file_is_checked_at_most_once_per_interval(
    tmp_path: Path, make_backend: Callable[..., HttpBackend]
) -> None:
    secret = tmp_path / "token"
    secret.write_text(FILE_SECRET)
    async with serve() as server:
        backend = make_backend(
            f"{server.url}/ok",
            headers={"X-Api-Key": HeaderSource(file=str(secret))},
            secret_check_interval=3600,
        )
        try:
            secret.write_text(ROTATED_SECRET)
            await backend.invoke(make_invocation())
        finally:
            await backend.aclose()

    assert [seen.headers["X-Api-Key"] for seen in server.seen] == [FILE_SECRET]


async def test_a_header_file_that_disappears_keeps_its_last_value(
    tmp_path: Path, make_backend: Callable[..., HttpBackend]
) -> None:
    secret = tmp_path / "token"
    secret.write_text(FILE_SECRET)
    async with serve() as server:
        backend = make_backend(
            f"{server.url}/ok",
            headers={"X-Api-Key": HeaderSource(file=str(secret))},
            secret_check_interval=0,
        )
        try:
            secret.unlink()
            with capture_logs() as logs:
                results = [await backend.invoke(make_invocation()) for _ in range(3)]
        finally:
            await backend.aclose()

    assert [result.kind for result in results] == [ResultKind.SUCCESS] * 3
    assert [seen.headers["X-Api-Key"] for seen in server.seen] == [FILE_SECRET] * 3
    # Warned once, not on every check.
    [warning] = logs
    assert warning["event"] == "header file unusable, keeping its previous value"
    assert warning["log_level"] == "warning"
    assert warning["file"] == str(secret)
    assert warning["error"] == "No such file or directory"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "No such file or directory"),
        (f"{FILE_SECRET}\n{FILE_SECRET}\n".encode(), "the value must be on one line"),
        (b"\xff" + FILE_SECRET.encode(), "the file is not UTF-8 text"),
    ],
)
def test_an_unusable_header_file_is_refused_at_creation(
    tmp_path: Path, content: bytes | None, reason: str
) -> None:
    secret = tmp_path / "token"
    if content is not None:
        secret.write_bytes(content)

    with pytest.raises(BackendError) as raised:
        HttpBackend(
            "http://127.0.0.1:1/",
            timeout=1,
            function_name="orders",
            headers={"X-Api-Key": HeaderSource(file=str(secret))},
        )

    assert str(raised.value) == (
        f"function 'orders': header 'X-Api-Key': cannot use {secret}: {reason}"
    )
    assert raised.value.__cause__ is None
    assert raised.value.__context__ is None or FILE_SECRET not in str(raised.value.__context__)


async def test_a_header_file_cannot_replace_the_protocol_headers(
    tmp_path: Path, make_backend: Callable[..., HttpBackend]
) -> None:
    spoof = tmp_path / "spoof"
    spoof.write_text("spoofed")
    async with serve() as server:
        backend = make_backend(
            f"{server.url}/ok",
            headers={
                "lambda-runtime-aws-request-id": HeaderSource(file=str(spoof)),
                "Content-Type": HeaderSource(file=str(spoof)),
            },
        )
        invocation = make_invocation()
        try:
            await backend.invoke(invocation)
        finally:
            await backend.aclose()

    [seen] = server.seen
    assert seen.headers["Lambda-Runtime-Aws-Request-Id"] == invocation.request_id
    assert seen.headers["Content-Type"] == "application/json"


# ---------------------------------------------------------------------------------------------
# Secrets stay out of reprs, errors and logs


async def test_header_values_appear_in_no_repr_error_or_log(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    pki: Pki,
    make_backend: Callable[..., HttpBackend],
) -> None:
    monkeypatch.setenv("ESM_TEST_TOKEN", ENV_SECRET)
    secret = tmp_path / "token"
    secret.write_text(FILE_SECRET)
    headers: dict[str, str | HeaderSource] = {
        "Authorization": HeaderSource(env="ESM_TEST_TOKEN", prefix="Bearer "),
        "X-Api-Key": HeaderSource(file=str(secret)),
        "X-Literal": LITERAL_SECRET,
    }
    texts: list[str] = []
    with capture_logs() as logs:
        async with serve(server_tls(pki)) as server:
            # A function that is down, and one whose certificate is not checked.
            down = make_backend(
                f"http://127.0.0.1:{free_port()}/ok", headers=headers, secret_check_interval=0
            )
            reached = make_backend(
                f"{server.url}/ok", headers=headers, verify_tls=False, secret_check_interval=0
            )
            texts += [repr(down), repr(reached)]
            texts += [repr(value) for value in headers.values() if isinstance(value, HeaderSource)]
            secret.write_text(ROTATED_SECRET)
            texts.append(str(await invoke_once(down)))
            secret.unlink()
            texts.append(str(await invoke_once(reached)))
        for bad in ({"X-Bad": f"one\n{LITERAL_SECRET}"}, {"X-Api-Key": headers["X-Api-Key"]}):
            with pytest.raises(BackendError) as raised:
                HttpBackend(server.url, timeout=1, function_name="orders", headers=bad)
            texts += [str(raised.value), repr(raised.value)]
    texts += [repr(entry) for entry in logs]

    assert any("Connect" in text for text in texts)  # the errors are there ...
    assert {entry["event"] for entry in logs} >= {
        "header file changed, using its new value",
        "header file unusable, keeping its previous value",
    }
    for text in texts:  # ... but not the secrets
        for value in SECRETS:
            assert value not in text, (value, text)


URL_PASSWORD = "url-password-5a8c31"


def with_credentials(url: str, userinfo: str = f"alice:{URL_PASSWORD}") -> str:
    return url.replace("://", f"://{userinfo}@", 1)


async def test_url_credentials_appear_in_no_repr_error_or_log(
    make_backend: Callable[..., HttpBackend],
) -> None:
    texts: list[str] = []
    with capture_logs() as logs:
        async with serve() as server:
            down = make_backend(with_credentials(f"http://127.0.0.1:{free_port()}/ok"))
            reached = make_backend(with_credentials(f"{server.url}/ok"))
            texts += [repr(down), repr(reached)]
            texts.append(str(await invoke_once(down)))
            assert (await invoke_once(reached)).ok
        for bad in (
            with_credentials("ftp://127.0.0.1/ok"),
            with_credentials("http:///ok"),
            with_credentials("http://[::1/ok"),
        ):
            with pytest.raises(BackendError) as raised:
                HttpBackend(bad, timeout=1, function_name="orders")
            texts += [str(raised.value), repr(raised.value)]
    texts += [repr(entry) for entry in logs]

    # The credentials are still used (as Basic authentication) ...
    [seen] = server.seen
    assert seen.headers["Authorization"].startswith("Basic ")
    assert any("Connect" in text for text in texts)  # ... the errors are there ...
    assert any("alice:***@" in text for text in texts)
    for text in texts:  # ... but not the password
        assert URL_PASSWORD not in text, text


@pytest.mark.parametrize("header", ["Authorization", "authorization"])
@pytest.mark.parametrize("userinfo", [f"alice:{URL_PASSWORD}", "token-only"])
def test_url_credentials_and_an_authorization_header_are_refused(
    header: str, userinfo: str
) -> None:
    # aiohttp would raise ValueError on every request; refused once, at creation.
    with pytest.raises(BackendError) as raised:
        HttpBackend(
            with_credentials("http://127.0.0.1:8080/ok", userinfo),
            timeout=1,
            function_name="orders",
            headers={header: HeaderSource(env="TOKEN")},
        )

    assert str(raised.value) == (
        "function 'orders': the url has credentials and an Authorization header is set: "
        "give only one of them"
    )
