from __future__ import annotations

from pathlib import Path

import pytest

from flows.config import ConfigError, load_settings, secret

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "backlash.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_loads_and_resolves_paths_against_its_folder() -> None:
    settings = load_settings(ROOT / "backlash.toml")
    assert settings.warehouse.path == ROOT / "demo" / "warehouse.duckdb"
    assert settings.sources[0].kind == "file"
    assert settings.alerts.outbox == ROOT / "demo" / "outbox"


def test_minimal_config_needs_only_a_warehouse(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, '[warehouse]\npath = "w.duckdb"\n'))
    assert settings.sources == []
    assert settings.changes is None
    assert settings.alerts.outbox == tmp_path / "outbox"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('[warehouse]\npath = "w"\n[[sources]]\nname = "a"\nkind = "zendsk"\n', "sources.0"),
        ('[warehouse]\npath = "w"\n[detection]\nalpha = 3\n', "detection.alpha"),
        ('[warehouse]\npath = "w"\n[alerts]\nsmtp_prot = 25\n', "alerts.smtp_prot"),
        ('[warehouse]\npath = "w"\n[schedule]\ntimezone = "Mars/Olympus"\n', "schedule.timezone"),
        (
            '[warehouse]\npath = "w"\n[schedule]\ndigest_cron = "0 25 * * *"\n',
            "schedule.digest_cron",
        ),
        (
            '[warehouse]\npath = "w"\n[[sources]]\nname = "Bad Name"\nkind = "file"\npath = "x"\n',
            "sources.0.file.name",
        ),
        (
            '[warehouse]\npath = "w"\n[[sources]]\nname = "a"\nkind = "imap"\nhost = "h"\n',
            "sources.0.imap.user",
        ),
        ("[sources\n", "not valid TOML"),
        ("[detection]\nalpha = 0.1\n", "missing [warehouse]"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text))
    assert names in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_duplicate_source_names_are_refused(tmp_path: Path) -> None:
    text = '[warehouse]\npath = "w"\n' + '[[sources]]\nname = "a"\nkind = "mbox"\npath = "m"\n' * 2
    with pytest.raises(ConfigError, match="two sources are named 'a'"):
        load_settings(write(tmp_path, text))


def test_secret_comes_from_the_environment_and_is_never_echoed(monkeypatch) -> None:
    monkeypatch.setenv("BACKLASH_TEST_TOKEN", "s3cr3t-value")
    assert secret("BACKLASH_TEST_TOKEN", what="source 'x'") == "s3cr3t-value"
    monkeypatch.delenv("BACKLASH_TEST_TOKEN")
    with pytest.raises(ConfigError) as err:
        secret("BACKLASH_TEST_TOKEN", what="source 'x'")
    assert "BACKLASH_TEST_TOKEN is not set" in str(err.value)


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BACKLASH_DETECTION__MIN_RATIO", "2.5")
    settings = load_settings(write(tmp_path, '[warehouse]\npath = "w"\n'))
    assert settings.detection.min_ratio == 2.5


def test_printed_taxonomy_loads_back_as_the_same_topics(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.pipeline import topics_of
    from transforms.taxonomy import DEFAULT_TOPICS

    minimal = write(tmp_path, '[warehouse]\npath = "w.duckdb"\n')
    printed = CliRunner().invoke(app, ["--config", str(minimal), "topics"])
    assert printed.exit_code == 0, printed.output
    again = write(tmp_path, '[warehouse]\npath = "w.duckdb"\n[labels]\n' + printed.output)
    assert tuple(topics_of(load_settings(again))) == tuple(DEFAULT_TOPICS)
