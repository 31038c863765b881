"""The kuberag command line: ingest (summary, refusals, exit codes) and ask, with clear messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from kuberag_api.cli import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, main

from tests.fixtures.api_app import write_corpus

pytestmark = pytest.mark.unit


def test_ingest_then_ask(tmp_path: Path, capsys):
    corpus = write_corpus(tmp_path / "docs")
    (corpus / "sub").mkdir()
    (corpus / "sub" / "nested.md").write_text("# Nested\n\nThe nested file mentions the blue heron.\n")
    (corpus / "binary.exe").write_bytes(b"MZ\x00\x00")
    data = tmp_path / "index"
    assert main(["ingest", str(corpus), "--data-dir", str(data)]) == EXIT_REFUSED
    out = capsys.readouterr().out
    assert "binary.exe" in out and "refused" in out and "unsupported" in out
    assert "sub/nested.md" in out and "5 added" in out
    assert main(["ingest", str(corpus / "tea.txt"), "--data-dir", str(data)]) == EXIT_OK
    assert "1 unchanged" in capsys.readouterr().out
    assert main(["ask", "Which bird does the nested file mention?", "--data-dir", str(data)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "heron" in out and "sub/nested.md" in out


def test_bad_input_is_a_message_not_a_traceback(tmp_path: Path, capsys):
    assert main(["ask", "   "]) == EXIT_USAGE
    assert "empty" in capsys.readouterr().err
    assert main(["ask", "x" * 501]) == EXIT_USAGE
    assert "500" in capsys.readouterr().err
    assert main(["ask", "anything?", "--data-dir", str(tmp_path / "none")]) == EXIT_USAGE
    assert "kuberag ingest" in capsys.readouterr().err
    assert main(["ingest", str(tmp_path / "missing"), "--data-dir", str(tmp_path / "i")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "no such file" in err and "Traceback" not in err


def test_serve_refuses_a_vector_store_config_it_cannot_use(tmp_path: Path, capsys):
    # A store that cannot be reached is reported by /readyz; a config that cannot work is refused at start.
    config = tmp_path / "config.yaml"
    header = "apiVersion: kuberag.io/v1alpha1\nkind: ApiConfig\n"
    config.write_text(header + "providers: {vectorStore: {url: 'weaviate:8080'}}\n")
    assert main(["serve", "--config", str(config), "--data-dir", str(tmp_path / "d"), "--port", "0"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "providers.vectorStore.url" in err and "Traceback" not in err
    config.write_text(header + "providers: {vectorStore: {url: 'http://weaviate:8080', pollSeconds: 5}}\n")
    assert main(["serve", "--config", str(config), "--data-dir", str(tmp_path / "d"), "--port", "0"]) == EXIT_USAGE
    assert "pollSeconds" in capsys.readouterr().err


def test_ingest_refuses_shards_without_a_shared_store(tmp_path: Path, capsys):
    corpus = write_corpus(tmp_path / "docs")
    assert main(["ingest", "--sync", str(corpus), "--shards", "2", "--data-dir", str(tmp_path / "i")]) == EXIT_USAGE
    assert "--shards" in capsys.readouterr().err
    assert main(["ingest", "--sync", str(corpus), str(corpus), "--data-dir", str(tmp_path / "i")]) == EXIT_USAGE
    assert "exactly one corpus directory" in capsys.readouterr().err


def test_ingest_sync_makes_the_local_index_hold_exactly_the_directory(tmp_path: Path, capsys):
    corpus = write_corpus(tmp_path / "docs")
    data = str(tmp_path / "index")
    assert main(["ingest", "--sync", str(corpus), "--data-dir", data]) == EXIT_OK
    (corpus / "tea.txt").unlink()
    assert main(["ingest", "--sync", str(corpus), "--data-dir", data]) == EXIT_OK
    assert "3 documents" in capsys.readouterr().out.splitlines()[-1]


KEYS_HEADER = "apiVersion: kuberag.io/v1alpha1\nkind: ClientKeys\n"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (KEYS_HEADER + "clients:\n  - name: a\n    key: [\n", "not valid YAML at line 6, column 1"),
        (KEYS_HEADER + "clients: " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
        # PyYAML keeps the last of two equal keys: a second clients: would drop every client above it.
        (KEYS_HEADER + "clients:\n  - {name: a, key: abcdefghijklmnopq}\nclients: []\n", "'clients' appears twice"),
        (KEYS_HEADER + "clients:\n  - {name: a, key: 2024-01-01}\n", "$.clients[0].key"),
        (b"\xc3\x28 not UTF-8", "not valid YAML"),
        ("", "empty"),
    ],
    ids=["bad-yaml", "deep", "duplicate-key", "date-key", "not-utf8", "empty"],
)
def test_serve_with_a_malformed_client_keys_file_says_what_is_wrong_in_one_line(
        tmp_path: Path, capsys, monkeypatch, content: str | bytes, expected: str):
    """The mounted client-keys Secret is malformed: the pod exits with one line naming the file
    and what is wrong (its log, in the crash loop), never a traceback."""
    keys = tmp_path / "clients.yaml"
    keys.write_bytes(content if isinstance(content, bytes) else content.encode())
    monkeypatch.setenv("KUBERAG_CLIENT_KEYS", str(keys))
    monkeypatch.setenv("KUBERAG_REDIS_URL", "")
    assert main(["serve", "--data-dir", str(tmp_path / "d"), "--port", "0"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"kuberag: {keys}: ") and expected in err, err


def test_a_yaml_error_in_the_client_keys_file_never_quotes_the_file(tmp_path: Path):
    """A config file's YAML error quotes the line (for the admin's /readyz detail); the client-keys
    file is a Secret: its line may hold a key, which must not reach the pod's log."""
    from kuberag_contract.config import ConfigError, parse_client_keys, parse_config_file

    secret = "sk-live-0123456789abcdef"
    with pytest.raises(ConfigError) as bad_keys:
        parse_client_keys(KEYS_HEADER + f"clients:\n  - {{name: a, key: [{secret}}}\n")
    assert "line 4" in str(bad_keys.value) and secret not in str(bad_keys.value)
    with pytest.raises(ConfigError) as bad_config:
        parse_config_file("apiVersion: kuberag.io/v1alpha1\nkind: ApiConfig\nrateLimit: {burst: [50}\n")
    assert "line 3" in str(bad_config.value) and "rateLimit: {burst: [50}" in str(bad_config.value)
