from pathlib import Path

import pytest

from rawexport.settings import SETTINGS_HELP, Settings, SettingsError, load_settings


def test_defaults() -> None:
    s = load_settings(environ={})
    assert s.port == 8080
    assert s.part_bytes == 64 * 1024 * 1024
    assert s.base_url == "http://127.0.0.1:8080"
    assert s.database_url.startswith("sqlite:///")


def test_precedence_toml_env_flags(tmp_path: Path) -> None:
    (tmp_path / "rawexport.toml").write_text("port = 9000\nrate_limit = 5.5\nworkers = 3\n")
    env = {"RAWEXPORT_HOME": str(tmp_path), "RAWEXPORT_PORT": "9100"}
    s = load_settings(environ=env)
    assert (s.port, s.rate_limit, s.workers) == (9100, 5.5, 3)
    s = load_settings({"port": 9200}, environ=env)
    assert s.port == 9200
    assert s.home == tmp_path


def test_bad_values_are_clear(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="port"):
        load_settings(environ={"RAWEXPORT_PORT": "eighty"})
    with pytest.raises(SettingsError, match="part_bytes"):
        load_settings(environ={"RAWEXPORT_PART_BYTES": "100"})
    (tmp_path / "rawexport.toml").write_text("nonsense = 1\n")
    with pytest.raises(SettingsError, match="nonsense"):
        load_settings(environ={"RAWEXPORT_HOME": str(tmp_path)})
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(environ={"RAWEXPORT_CONFIG": str(tmp_path / "missing.toml")})
    with pytest.raises(SettingsError, match="unknown"):
        load_settings({"colour": "red"}, environ={})


def test_bool_setting() -> None:
    assert load_settings(environ={"RAWEXPORT_STRICT_AUTH_CODES": "yes"}).strict_auth_codes


def test_every_setting_has_help() -> None:
    assert all(SETTINGS_HELP.values())
    assert set(SETTINGS_HELP) == set(Settings.__dataclass_fields__)
