"""The settings, config/sink.toml, README.md and `auditcov serve --help` cannot drift apart."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from sink_support import event

from auditcov.merge.store import open_store
from auditcov.sink.cli import cli
from auditcov.sink.ingest import Ingestor
from auditcov.sink.settings import SETTINGS, Settings, SettingsError, load_settings

ROOT = Path(__file__).parent.parent
CONFIG = ROOT / "config/sink.toml"


def test_config_file_lists_every_setting_with_its_default_and_a_comment():
    document = tomllib.loads(CONFIG.read_text())
    assert list(document) == [setting.name for setting in SETTINGS]
    assert load_settings(CONFIG, {}) == Settings()
    lines = CONFIG.read_text().splitlines()
    for setting in SETTINGS:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{setting.name} = "))
        # Keys set next to each other (tls_cert, tls_key) share the comment above them.
        above = next(line for line in reversed(lines[:index]) if not re.match(r"\w+ = ", line))
        assert above.startswith("#"), f"{setting.name} has no comment above it in {CONFIG}"


def test_readme_and_serve_help_name_every_setting():
    readme = (ROOT / "README.md").read_text()
    assert readme.startswith("# auditcov\n\n```\nmake run\nmake test\n```")
    help_text = CliRunner().invoke(cli, ["serve", "--help"], terminal_width=200).output
    for setting in SETTINGS:
        assert f"`{setting.name}`" in readme, f"README.md does not describe {setting.name}"
        assert "--" + setting.name.replace("_", "-") in help_text
    assert "Example: auditcov serve" in help_text
    assert "Example: auditcov stats" in CliRunner().invoke(cli, ["stats", "--help"]).output


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "sink.toml"
    bad.write_text('listen = "127.0.0.1:1"\nbody_limt = 5\n')
    with pytest.raises(SettingsError, match="unknown key 'body_limt'"):
        load_settings(bad, {})
    bad.write_text("body_limit = '5'\n")
    with pytest.raises(SettingsError, match="body_limit must be int, not str"):
        load_settings(bad, {})
    with pytest.raises(SettingsError, match="tls_cert and tls_key"):
        load_settings(None, {"tls_cert": "x.pem"})
    with pytest.raises(SettingsError, match="listen must be host:port"):
        load_settings(None, {"listen": "8080"})
    with pytest.raises(SettingsError, match="cannot read the config"):
        load_settings(tmp_path / "missing.toml", {})


def test_flags_override_the_config_file(tmp_path):
    config = tmp_path / "sink.toml"
    config.write_text('default_run = "from-file"\nkeep_bodies = true\nsynchronous = "FULL"\n')
    settings = load_settings(config, {"default_run": "from-flag", "keep_bodies": None})
    assert (settings.default_run, settings.keep_bodies, settings.synchronous) == ("from-flag", True, "FULL")


def test_stats_command_prints_json_and_says_when_there_is_no_store(tmp_path):
    db = open_store(tmp_path / "s.db")
    Ingestor(db).ingest("r1", [event("a"), event("b"), {"bad": True}])
    db.conn.close()
    result = CliRunner().invoke(cli, ["stats", "--db", str(tmp_path / "s.db"), "--run", "r1"])
    assert result.exit_code == 0, result.output
    stats = orjson.loads(result.output)
    assert {k: stats[k] for k in ("events", "duplicates", "quarantined", "runs", "tests")} == {
        "events": 2,
        "duplicates": 0,
        "quarantined": 1,
        "runs": 1,
        "tests": 1,
    }
    missing = CliRunner().invoke(cli, ["stats", "--db", str(tmp_path / "nothing.db")])
    assert missing.exit_code == 1
    assert "no store there" in missing.output
    unknown = CliRunner().invoke(cli, ["stats", "--db", str(tmp_path / "s.db"), "--run", "r2"])
    assert "no run named 'r2'" in unknown.output
