"""`haosq config show|check` and database URLs from credential files."""

from __future__ import annotations

import json

import pytest

from haosq.cli.config import check_settings
from haosq.config import load_settings
from haosq.errors import ConfigError
from tests.integration.cli_support import Result, environment, invoke

GOOD = """
[worker]
concurrency = 8

[handlers.email]
smtp_host = "mail.example.com"
smtp_password = "hunter2"
relay_url = "smtp://bob:s3cret@mail.example.com:587"

[metrics]
host = "127.0.0.1"

[groups.email]
types = ["email"]
concurrency = 4

[webhooks]
allow_hosts = ["hooks.example.com"]
[webhooks.routes]
"email:send" = "https://hooks.example.com/sent"

[[schedules]]
name = "nightly-cleanup"
type = "demo:echo"
cron = "0 3 * * *"
"""


def haosq(env: dict[str, str], *args: str) -> Result:
    """`haosq ARGS` in-process, with the haosq settings of `env` (see cli_support)."""
    with environment(env):
        return invoke(list(args))


@pytest.fixture
def config_env(cli_env, tmp_path):
    path = tmp_path / "haosq.toml"
    path.write_text(GOOD)
    return {**cli_env, "HAOSQ_CONFIG": str(path), "HAOSQ_POLL_INTERVAL": "250"}, path


def test_show_gives_every_value_its_source_with_secrets_masked(config_env):
    env, path = config_env
    shown = haosq(env, "config", "show", "--json")
    assert shown.exit_code == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert document["database"] == "configured" and document["data_dir"] is None
    rows = {row["key"]: row for row in document["settings"]}
    # Values are typed as JSON has them, not Python reprs.
    assert rows["worker.concurrency"] == {"key": "worker.concurrency", "value": 8, "source": str(path)}
    assert rows["worker.poll_interval_ms"] == {"key": "worker.poll_interval_ms", "value": 250,
                                               "source": "env HAOSQ_POLL_INTERVAL"}
    assert rows["worker.max_attempts"]["source"] == "default"
    assert rows["worker.backoff_base_seconds"]["value"] == 2.0
    assert rows["worker.listen"]["value"] is True
    assert rows["worker.id"]["value"] is None and rows["worker.types"]["value"] == []
    assert rows["log_level"]["value"] == "info"
    assert rows["database_url"]["source"] == "env HAOSQ_DATABASE_URL"
    assert rows["handlers.email.smtp_password"]["value"] == "***"
    assert rows["handlers.email.relay_url"]["value"] == "smtp://bob:***@mail.example.com:587"
    assert rows["handlers.email.smtp_host"]["value"] == "mail.example.com"
    assert rows["groups.email.types"]["value"] == ["email"]
    assert rows["groups.email.concurrency"]["value"] == 4
    assert rows["webhooks.routes.email:send"]["source"] == str(path)
    assert rows["schedules[0].name"]["value"] == "nightly-cleanup"
    assert "hunter2" not in shown.stdout and "s3cret" not in shown.stdout

    table = haosq(env, "config", "show")
    assert table.exit_code == 0 and "handlers.email.smtp_password" in table.stdout
    assert "hunter2" not in table.stdout


def test_show_says_embedded_without_a_database_url(config_env):
    env, _path = config_env
    env = {k: v for k, v in env.items() if k != "HAOSQ_DATABASE_URL"}
    env["HAOSQ_DATA_DIR"] = "/srv/haosq-data"
    document = json.loads(haosq(env, "config", "show", "--json").stdout)
    assert document["database"] == "embedded" and document["data_dir"] == "/srv/haosq-data"
    rows = {row["key"]: row for row in document["settings"]}
    assert rows["database_url"] == {"key": "database_url", "value": None, "source": "default"}
    table = haosq(env, "config", "show")
    assert table.exit_code == 0, table.stderr
    assert "database: embedded server (no database_url set), data in /srv/haosq-data" in table.stdout
    assert "(unset: the embedded server)" in table.stdout


def test_check_accepts_a_good_file(config_env):
    env, _path = config_env
    checked = haosq(env, "config", "check")
    assert checked.exit_code == 0, checked.stderr
    assert "configuration ok" in checked.stdout and "[webhooks]" in checked.stdout


@pytest.mark.parametrize(("change", "expected"), [
    ("concurrency = 8", "worker.concurrency"),
    ('[metrics]\nhost = "127.0.0.1"', "[metrics] port"),
    ('types = ["email"]', "[groups.email]: unknown key 'colour'"),
    ('allow_hosts = ["hooks.example.com"]', "allow_hosts"),
    ('cron = "0 3 * * *"', "schedule #1"),
])
def test_check_names_the_key_at_fault(config_env, change, expected):
    _env, path = config_env
    broken = {
        "concurrency = 8": "concurrency = 0",
        '[metrics]\nhost = "127.0.0.1"': '[metrics]\nport = 70000',
        'types = ["email"]': 'types = ["email"]\ncolour = "blue"',
        'allow_hosts = ["hooks.example.com"]': 'allow_hosts = "hooks.example.com"',
        'cron = "0 3 * * *"': 'cron = "not a cron"',
    }[change]
    path.write_text(GOOD.replace(change, broken))
    with pytest.raises(ConfigError) as caught:
        check_settings(load_settings(env={"HAOSQ_CONFIG": str(path)}))
    assert expected in str(caught.value)


def test_check_exits_2_with_one_line(config_env):
    env, path = config_env
    path.write_text(GOOD.replace('[metrics]\nhost = "127.0.0.1"', "[metrics]\nport = 70000"))
    checked = haosq(env, "config", "check")
    assert checked.exit_code == 2, checked.stdout
    assert "[metrics] port = 70000" in checked.stderr
    assert len(checked.stderr.strip().splitlines()) == 1


def test_database_url_from_credential_and_file(tmp_path):
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "database-url").write_text("postgresql://haosq:pw@db/haosq\n")
    settings = load_settings(env={"HAOSQ_CONFIG": str(empty), "CREDENTIALS_DIRECTORY": str(credentials)})
    assert settings.database_url == "postgresql://haosq:pw@db/haosq"
    assert dict((k, s) for k, _v, s in settings.describe())["database_url"] == "credential database-url"
    assert "pw@" not in dict((k, v) for k, v, _s in settings.describe())["database_url"]

    url_file = tmp_path / "url"
    url_file.write_text("postgresql://other@db/x")
    settings = load_settings(env={"HAOSQ_CONFIG": str(empty), "HAOSQ_DATABASE_URL_FILE": str(url_file),
                                  "CREDENTIALS_DIRECTORY": str(credentials)})
    assert settings.database_url == "postgresql://other@db/x"
    # The environment still wins over files.
    settings = load_settings(env={"HAOSQ_CONFIG": str(empty), "DATABASE_URL": "postgresql://env@db/x",
                                  "CREDENTIALS_DIRECTORY": str(credentials)})
    assert settings.database_url == "postgresql://env@db/x"
    with pytest.raises(ConfigError, match="HAOSQ_DATABASE_URL_FILE"):
        load_settings(env={"HAOSQ_CONFIG": str(empty), "HAOSQ_DATABASE_URL_FILE": str(tmp_path / "no")})
