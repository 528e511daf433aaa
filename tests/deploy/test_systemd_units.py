"""The units pass `systemd-analyze verify` and score <= 2.0 in `systemd-analyze security`."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from haosq.cli.systemd import (
    MAX_EXPOSURE,
    SERVICE,
    TARGET,
    UnitOptions,
    check_units,
    exposure_score,
    render_service,
    render_target,
)
from haosq.config import load_settings
from haosq.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
HAOSQ = str(Path(sys.executable).with_name("haosq"))

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze missing: .ci/system-deps installs systemd")


def run_haosq(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HAOSQ, *args], capture_output=True, text=True, env=env, timeout=60,
                          check=False)


def security_score(unit: Path, user: bool = False) -> float:
    scope = ["--user"] if user else []
    env = {**os.environ, "XDG_RUNTIME_DIR": str(unit.parent)}
    out = subprocess.run(["systemd-analyze", *scope, "security", "--offline=yes", "--no-pager",
                          str(unit)], capture_output=True, text=True, check=False, env=env)
    score = exposure_score(out.stdout + out.stderr)
    assert score is not None, out.stdout + out.stderr
    return score


def test_shipped_units_are_the_rendered_defaults():
    options = UnitOptions()
    assert (REPO / "systemd" / SERVICE).read_text() == render_service(options)
    assert (REPO / "systemd" / TARGET).read_text() == render_target(options)


def test_service_has_the_promised_settings():
    text = render_service(UnitOptions(executable="/opt/haosq/bin/haosq", shutdown_timeout_seconds=40,
                                      heartbeat_interval_ms=20000))
    lines = set(text.splitlines())
    for expected in ("Type=notify", "KillSignal=SIGTERM", "TimeoutStopSec=55", "WatchdogSec=80",
                     "Restart=on-failure", "DynamicUser=yes", "NoNewPrivileges=yes",
                     "ProtectSystem=strict", "PrivateTmp=yes", "ProtectHome=yes",
                     "CapabilityBoundingSet=", "SystemCallFilter=@system-service",
                     "ExecStart=/opt/haosq/bin/haosq worker", "Environment=HAOSQ_GROUP=%i",
                     "EnvironmentFile=-/etc/haosq/%i.env", "Environment=HAOSQ_SHUTDOWN_TIMEOUT=40",
                     "PartOf=haosq-worker.target", "WantedBy=haosq-worker.target"):
        assert expected in lines, expected
    # The daemon runs directly: no shell, no secrets on the command line.
    exec_line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert "sh -c" not in exec_line and "postgresql://" not in exec_line


@pytest.mark.parametrize("user", [False, True])
def test_rendered_units_verify_and_score(tmp_path, user):
    service = tmp_path / SERVICE
    service.write_text(render_service(UnitOptions(executable=HAOSQ, user=user)))
    (tmp_path / TARGET).write_text(render_target(UnitOptions(user=user)))
    assert check_units(tmp_path, user=user, instance="email") == []
    instance = tmp_path / "haosq-worker@email.service"
    shutil.copy(service, instance)
    score = security_score(instance, user=user)
    assert score <= MAX_EXPOSURE


def test_a_bare_unit_scores_badly_and_doctor_says_so(tmp_path):
    (tmp_path / SERVICE).write_text(f"[Service]\nType=simple\nExecStart={HAOSQ} worker\n")
    (tmp_path / TARGET).write_text(render_target(UnitOptions()))
    problems = check_units(tmp_path)
    assert any(p.startswith("security: exposure") for p in problems), problems
    assert security_score(tmp_path / SERVICE) > 9


def test_types_all_means_every_type(tmp_path):
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert load_settings(env={"HAOSQ_CONFIG": str(empty), "HAOSQ_TYPES": "all"})["worker.types"] == ()
    assert load_settings(env={"HAOSQ_CONFIG": str(empty), "HAOSQ_TYPES": "email"})["worker.types"] == (
        "email",)


def test_instance_name_selects_the_group(tmp_path):
    config = tmp_path / "haosq.toml"
    config.write_text('[worker]\nconcurrency = 2\n[groups.mail]\ntypes = ["email", "push:send"]\n'
                      "concurrency = 6\n")
    base = {"HAOSQ_CONFIG": str(config)}
    mail = load_settings(env={**base, "HAOSQ_GROUP": "mail"})
    assert mail["worker.types"] == ("email", "push:send") and mail["worker.concurrency"] == 6
    assert mail.sources["worker.concurrency"] == f"{config} [groups.mail]"
    # A group without a table runs the types its name says; "all" runs everything.
    assert load_settings(env={**base, "HAOSQ_GROUP": "media"})["worker.types"] == ("media",)
    assert load_settings(env={**base, "HAOSQ_GROUP": "all"})["worker.types"] == ()
    assert load_settings(env={**base, "HAOSQ_GROUP": "all"})["worker.concurrency"] == 2
    # The group's env file (environment) still wins.
    env_wins = load_settings(env={**base, "HAOSQ_GROUP": "mail", "HAOSQ_TYPES": "email"})
    assert env_wins["worker.types"] == ("email",)
    config.write_text("[groups.mail]\ncolour = 1\n")
    with pytest.raises(ConfigError, match=r"\[groups.mail\]: unknown key 'colour'"):
        load_settings(env={**base, "HAOSQ_GROUP": "mail"})


def test_install_writes_units_env_and_credential_then_doctor_passes(tmp_path, cli_env):
    units, configs = tmp_path / "units", tmp_path / "etc"
    done = run_haosq("systemd", "install", "email", "--concurrency", "8", "--unit-dir", str(units),
                     "--config-dir", str(configs), env=cli_env)
    assert done.returncode == 0, done.stderr
    assert (units / SERVICE).is_file() and (units / TARGET).is_file()
    env_file = configs / "email.env"
    assert "#HAOSQ_TYPES=email" in env_file.read_text()
    assert "HAOSQ_CONCURRENCY=8" in env_file.read_text()
    credential = configs / "credentials" / "database-url"
    assert credential.read_text().strip() == cli_env["HAOSQ_DATABASE_URL"]
    for secret_file in (env_file, credential):
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert f"ExecStart={Path(HAOSQ).resolve()} worker" in (units / SERVICE).read_text()

    doctor = run_haosq("systemd", "doctor", "--unit-dir", str(units), env=cli_env)
    assert doctor.returncode == 0, doctor.stderr
    assert "verify ok" in doctor.stdout

    # A hand edit that weakens the sandbox is caught.
    (units / SERVICE).write_text((units / SERVICE).read_text().replace("ProtectSystem=strict\n", "")
                                 .replace("DynamicUser=yes\n", "").replace("PrivateUsers=yes\n", "")
                                 .replace("CapabilityBoundingSet=\n", "")
                                 .replace("SystemCallFilter=@system-service\n", ""))
    broken = run_haosq("systemd", "doctor", "--unit-dir", str(units), env=cli_env)
    assert broken.returncode == 2
    assert "exposure" in broken.stderr


def test_install_print_writes_nothing(tmp_path, cli_env):
    done = run_haosq("systemd", "install", "all", "--print", "--unit-dir", str(tmp_path / "u"),
                     "--config-dir", str(tmp_path / "c"), env=cli_env)
    assert done.returncode == 0, done.stderr
    assert "Type=notify" in done.stdout and "#HAOSQ_TYPES=all" in done.stdout
    assert not (tmp_path / "u").exists() and not (tmp_path / "c").exists()
    assert cli_env["HAOSQ_DATABASE_URL"] not in done.stdout


def test_install_rejects_a_bad_group_name(tmp_path, cli_env):
    done = run_haosq("systemd", "install", "Email Senders", "--print", env=cli_env)
    assert done.returncode == 2
    assert "worker group" in done.stderr and "Traceback" not in done.stderr


def test_user_units_point_at_the_user_config(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAOSQ_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    text = render_service(UnitOptions(user=True))
    assert "EnvironmentFile=-%E/haosq/%i.env" in text and "DynamicUser" not in text
    assert "WantedBy=default.target" in render_target(UnitOptions(user=True))


def test_example_env_file_is_the_rendered_one():
    from haosq.cli.systemd import render_env

    assert (REPO / "systemd" / "haosq-worker.env.example").read_text() == render_env("email", None, 4)
