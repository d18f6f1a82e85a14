"""Which config file is read, and relative paths in it relative to the file, not the cwd."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from segwatch.collector.config import ConfigError, load_config, parse_config
from segwatch.collector.config.files import find_config, resolve_dsn
from segwatch.collector.durable.spool_admin import spool_directory


def test_relative_paths_in_a_file_are_relative_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "etc"
    (conf / "tls").mkdir(parents=True)
    server = trustme.CA().issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(conf / "tls" / "server.pem"))
    server.private_key_pem.write_to_path(str(conf / "tls" / "server.key"))
    (conf / "segwatch.yaml").write_text(
        "storage:\n  dsn: chdb://data\n  spool:\n    path: ../spool\n"
        "receiver:\n  grpc:\n    tls: {cert_file: tls/server.pem, key_file: ./tls/server.key}\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config("../etc/segwatch.yaml")
    assert config.storage.dsn == f"chdb://{conf / 'data'}"
    assert config.storage.spool.path == str(tmp_path / "spool")
    assert config.receiver.tls.cert_file == str(conf / "tls" / "server.pem")
    assert config.receiver.tls.key_file == str(conf / "tls" / "server.key")
    # The default store lives beside the file too.
    (conf / "bare.yaml").write_text("scheduler: {enabled: false}\n")
    assert load_config(str(conf / "bare.yaml")).storage.dsn == f"chdb://{conf / 'segwatch-data'}"
    # A missing TLS file is named as resolved, with its YAML path.
    (conf / "broken.yaml").write_text(
        "receiver:\n  grpc:\n    tls: {cert_file: tls/nope.pem, key_file: tls/server.key}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(str(conf / "broken.yaml"))
    assert f"receiver.grpc.tls.cert_file (line 3): '{conf / 'tls' / 'nope.pem'}'" in str(
        caught.value
    )


def test_text_without_a_file_keeps_paths_as_written() -> None:
    config = parse_config("storage:\n  dsn: chdb://data\n")
    assert config.storage.dsn == "chdb://data"


@pytest.mark.parametrize(
    ("dsn", "resolved"),
    [
        ("chdb://data", "chdb:///srv/app/data"),
        ("chdb://./a/../b", "chdb:///srv/app/b"),
        ("chdb:///var/lib/segwatch", "chdb:///var/lib/segwatch"),
        ("chdb://memory", "chdb://memory"),
        ("chdb://with%20space", "chdb:///srv/app/with%20space"),
        ("https://u:p@host:8443/db", "https://u:p@host:8443/db"),
    ],
)
def test_resolve_dsn(dsn: str, resolved: str) -> None:
    assert resolve_dsn("/srv/app", dsn) == resolved


def test_find_config_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEGWATCH_CONFIG", raising=False)
    assert find_config(None) is None
    (tmp_path / "segwatch.yaml").write_text("{}\n")
    assert find_config(None) == "segwatch.yaml"
    monkeypatch.setenv("SEGWATCH_CONFIG", "/etc/segwatch.yaml")
    assert find_config(None) == "/etc/segwatch.yaml"
    assert find_config("mine.yaml") == "mine.yaml"


def test_a_server_collectors_spool_lives_beside_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "etc" / "segwatch.yaml"
    config.parent.mkdir()
    config.write_text("storage:\n  dsn: http://clickhouse.internal:8123/segwatch\n")
    monkeypatch.chdir(tmp_path)  # started anywhere else: the spool stays put
    assert spool_directory(load_config(str(config))) == str(tmp_path / "etc" / "segwatch-spool")
