"""Strangers are kept out: TLS, mutual TLS and bearer tokens on the receiver; the API's token.

Real certificates, made for each test by ``trustme`` (a CA and leaf
certificates for 127.0.0.1); the OTel SDK's OTLP exporter as the client.
The receiver's consumer here is the collector's real processor on the
embedded store (the ``collector`` fixture would not take TLS settings, so
these tests build the receiver around it).
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from segwatch.collector.cli.access import ApiAccess, ApiError
from segwatch.collector.config import ConfigError, TlsConfig, parse_config
from segwatch.collector.receive.receiver import OTLPReceiver
from segwatch.collector.service.api import LocalApi
from segwatch.collector.service.collector import Collector
from segwatch.instrumentation import monitor

TOKEN = "s3cret-token-for-tests-0123456789"


@pytest.fixture
def certificates(tmp_path: Path) -> dict[str, Any]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("model-service@example.com")
    stranger = trustme.CA().issue_cert("intruder@example.com")  # signed by another CA
    files = {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "server.pem",
        "key": tmp_path / "server.key",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.cert_chain_pems[0].write_to_path(str(files["cert"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    return {"ca": ca, "client": client, "stranger": stranger, "files": files}


def _receiver(collector: Collector, **options: Any) -> Iterator[OTLPReceiver]:
    receiver = OTLPReceiver("127.0.0.1:0", collector.processor, **options)  # type: ignore[arg-type]
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.shutdown()


def _spans(recorder: Any) -> list[Any]:
    model = monitor("fraud", version="1", tracer_provider=recorder.provider)
    with model.call() as call:
        call.features(amount=12.0)
    return recorder.spans()


def _export(address: str, spans: list[Any], **options: Any) -> SpanExportResult:
    exporter = OTLPSpanExporter(endpoint=address, timeout=5, **options)
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()


def _credentials(
    certificates: dict[str, Any], client: str | None = None
) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=certificates["ca"].cert_pem.bytes())
    leaf = certificates[client]
    return grpc.ssl_channel_credentials(
        root_certificates=certificates["ca"].cert_pem.bytes(),
        private_key=leaf.private_key_pem.bytes(),
        certificate_chain=b"".join(pem.bytes() for pem in leaf.cert_chain_pems),
    )


def test_tls_takes_clients_that_trust_its_certificate_and_only_tls(
    collector: Collector, certificates: dict[str, Any], recorder: Any
) -> None:
    files = certificates["files"]
    tls = TlsConfig(cert_file=str(files["cert"]), key_file=str(files["key"]))
    for receiver in _receiver(collector, tls=tls):
        spans = _spans(recorder)
        assert _export(receiver.address, spans, credentials=_credentials(certificates)) == (
            SpanExportResult.SUCCESS
        )
        assert _export(receiver.address, spans, insecure=True) == SpanExportResult.FAILURE
        untrusting = grpc.ssl_channel_credentials(root_certificates=trustme.CA().cert_pem.bytes())
        assert _export(receiver.address, spans, credentials=untrusting) == SpanExportResult.FAILURE
    assert collector.processor is not None and collector.processor.stats.model_calls == 1


def test_mutual_tls_takes_only_clients_with_a_certificate_from_its_ca(
    collector: Collector, certificates: dict[str, Any], recorder: Any
) -> None:
    files = certificates["files"]
    tls = TlsConfig(str(files["cert"]), str(files["key"]), client_ca_file=str(files["ca"]))
    for receiver in _receiver(collector, tls=tls):
        spans = _spans(recorder)
        signed = _credentials(certificates, "client")
        assert _export(receiver.address, spans, credentials=signed) == SpanExportResult.SUCCESS
        no_certificate = _credentials(certificates)
        assert _export(receiver.address, spans, credentials=no_certificate) == (
            SpanExportResult.FAILURE
        )
        foreign = _credentials(certificates, "stranger")
        assert _export(receiver.address, spans, credentials=foreign) == SpanExportResult.FAILURE
    assert collector.processor is not None and collector.processor.stats.model_calls == 1


def test_a_bearer_token_is_required_and_checked(
    collector: Collector, recorder: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for receiver in _receiver(collector, token=TOKEN):
        spans = _spans(recorder)
        with grpc.insecure_channel(receiver.address) as channel:
            export = channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
            )
            for metadata in ((), (("authorization", "Bearer wrong"),),
                             (("authorization", TOKEN),)):  # fmt: skip
                with pytest.raises(grpc.RpcError) as caught:
                    export(b"", metadata=metadata, timeout=5)
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        right = {"authorization": f"Bearer {TOKEN}"}
        assert _export(receiver.address, spans, insecure=True, headers=right) == (
            SpanExportResult.SUCCESS
        )
    assert collector.processor is not None and collector.processor.stats.model_calls == 1
    assert TOKEN not in caplog.text


def _get(url: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_api_needs_a_token_beyond_loopback_and_checks_it(collector: Collector) -> None:
    status = lambda: {"ok": True}  # noqa: E731
    client = collector._clients.api  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="SEGWATCH_API_TOKEN"):
        LocalApi("0.0.0.0:0", client, status).start()
    api = LocalApi("0.0.0.0:0", client, status, token=TOKEN)
    api.start()
    try:
        port = api.url.rsplit(":", 1)[1]
        url = f"http://127.0.0.1:{port}"
        assert _get(f"{url}/api/v1/status")[0] == 401
        assert _get(f"{url}/api/v1/status", "wrong")[0] == 401
        code, body = _get(f"{url}/api/v1/status", TOKEN)
        assert code == 200 and body["ok"] is True
        assert _get(f"{url}/healthz") == (200, {"status": "ok"})  # probes need no token
        assert ApiAccess(url, token=TOKEN).status()["ok"] is True  # the CLI's client
        with pytest.raises(ApiError, match="bearer token"):
            ApiAccess(url, token="").status()
    finally:
        api.shutdown()
    # On loopback a token is needed too: a random one per start unless one is given.
    assert collector.api is not None
    assert _get(f"{collector.api.url}/api/v1/status")[0] == 401
    assert len(collector.api.token) >= 32
    assert _get(f"{collector.api.url}/api/v1/status", collector.api.token)[0] == 200


def test_tls_settings_are_checked_when_the_config_is_read(certificates: dict[str, Any]) -> None:
    files = certificates["files"]
    config = parse_config(
        f"receiver:\n  grpc:\n    tls:\n      cert_file: {files['cert']}\n"
        f"      key_file: {files['key']}\n      client_ca_file: {files['ca']}\n"
    )
    assert config.receiver.tls == TlsConfig(str(files["cert"]), str(files["key"]), str(files["ca"]))
    with pytest.raises(ConfigError) as caught:
        parse_config(
            f"receiver:\n  grpc:\n    tls:\n      cert_file: {files['cert']}\n"
            "      key_file: /nonexistent/server.key\n"
        )
    assert "receiver.grpc.tls.key_file" in str(caught.value)
    assert "not a readable file" in str(caught.value)
    with pytest.raises(ConfigError, match="cert_file and key_file go together"):
        parse_config(f"receiver:\n  grpc:\n    tls:\n      cert_file: {files['cert']}\n")
