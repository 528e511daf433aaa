from pathlib import Path

import pytest

from haosq.config import load_settings, mask_url
from haosq.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "haosq.toml"
    path.write_text(text)
    return path


def test_defaults_when_nothing_is_configured(tmp_path):
    settings = load_settings(env={"HAOSQ_CONFIG": str(write(tmp_path, ""))})
    assert settings.database_url is None
    assert settings["worker.concurrency"] == 1
    assert settings["worker.max_attempts"] == 3
    assert settings.sources["worker.concurrency"] == "default"


def test_file_then_env_then_cli_each_win(tmp_path):
    path = write(tmp_path, "[worker]\nconcurrency = 4\npoll_interval_ms = 250\nmax_attempts = 7\n")
    settings = load_settings(env={"HAOSQ_CONFIG": str(path), "HAOSQ_CONCURRENCY": "6"})
    assert settings["worker.poll_interval_ms"] == 250
    assert settings.sources["worker.poll_interval_ms"] == str(path)
    assert settings["worker.concurrency"] == 6
    assert settings.sources["worker.concurrency"] == "env HAOSQ_CONCURRENCY"
    overridden = settings.with_overrides(**{"worker.concurrency": 9, "worker.max_attempts": None})
    assert overridden["worker.concurrency"] == 9
    assert overridden.sources["worker.concurrency"] == "command line"
    assert overridden["worker.max_attempts"] == 7


def test_seed_names_keep_working_and_haosq_names_win(tmp_path):
    env = {
        "HAOSQ_CONFIG": str(write(tmp_path, "")),
        "DATABASE_URL": "postgresql://seed@db/haos",
        "JOB_QUEUE_DEFAULT_CONCURRENCY": "5",
        "JOB_QUEUE_POLL_INTERVAL": "500",
        "JOB_QUEUE_HEARTBEAT_INTERVAL": "15000",
        "JOB_QUEUE_MAX_ATTEMPTS": "4",
    }
    settings = load_settings(env=env)
    assert settings.database_url == "postgresql://seed@db/haos"
    assert settings["worker.concurrency"] == 5
    assert settings["worker.poll_interval_ms"] == 500
    assert settings["worker.heartbeat_interval_ms"] == 15000
    assert settings["worker.max_attempts"] == 4
    both = load_settings(env=env | {"HAOSQ_DATABASE_URL": "postgresql://primary@db/q"})
    assert both.database_url == "postgresql://primary@db/q"
    assert both.sources["database_url"] == "env HAOSQ_DATABASE_URL"


@pytest.mark.parametrize(
    ("text", "env", "fragment"),
    [
        ("[worker]\nconcurrency = 0\n", {}, "worker.concurrency = 0 is invalid"),
        ("[worker]\nconcurency = 2\n", {}, "unknown key 'worker.concurency'"),
        ("worker = [\n", {}, "cannot read config file"),
        ("", {"JOB_QUEUE_POLL_INTERVAL": "fast"}, "environment JOB_QUEUE_POLL_INTERVAL"),
        ("", {"HAOSQ_LISTEN": "maybe"}, "must be true or false"),
    ],
)
def test_invalid_configuration_names_the_key(tmp_path, text, env, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.").replace("(", r"\(")):
        load_settings(env={"HAOSQ_CONFIG": str(write(tmp_path, text)), **env})


def test_missing_explicit_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(env={}, config_file=tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="HAOSQ_CONFIG"):
        load_settings(env={"HAOSQ_CONFIG": str(tmp_path / "nope.toml")})
    assert load_settings(env={"HAOSQ_CONFIG": "/dev/null"}).config_file == Path("/dev/null")


def test_open_sections_are_kept_for_their_owners(tmp_path):
    path = write(tmp_path, '[handlers.smtp]\nurl = "smtp://localhost:25"\n')
    settings = load_settings(env={"HAOSQ_CONFIG": str(path)})
    assert settings.sections["handlers"]["smtp"]["url"] == "smtp://localhost:25"


def test_describe_masks_the_database_password(tmp_path):
    env = {"HAOSQ_CONFIG": str(write(tmp_path, "")), "DATABASE_URL": "postgresql://u:hunter2@h:5432/d"}
    rows = {key: (value, source) for key, value, source in load_settings(env=env).describe()}
    assert "hunter2" not in rows["database_url"][0]
    assert rows["database_url"] == ("postgresql://u:***@h:5432/d", "env DATABASE_URL")


def test_mask_url_leaves_password_less_urls_alone():
    assert mask_url("postgresql://postgres@/haosq?host=/tmp") == "postgresql://postgres@/haosq?host=/tmp"
    assert mask_url("postgresql://a:b@c/d") == "postgresql://a:***@c/d"
