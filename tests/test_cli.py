"""The CLI entry point: help, version, and the exit code for a bad command."""

import subprocess
import sys

import pytest


def run_cli(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m tripletface ARGS`` in a subprocess, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "tripletface", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_version_prints_and_exits_zero():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("tripletface ")


def test_unknown_command_is_a_usage_error():
    result = run_cli("no-such-command")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_the_program_exits_with_mains_code_and_a_lazy_collector(monkeypatch):
    import gc

    from tripletface import cli

    monkeypatch.setattr(cli, "main", lambda: 1)
    thresholds = gc.get_threshold()
    try:
        with pytest.raises(SystemExit) as exit_:
            cli.run()
        assert exit_.value.code == 1
        assert gc.get_threshold()[0] >= 10 * thresholds[0] and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_a_port_beyond_65535_is_a_usage_error():
    result = run_cli("serve", "--port", "99999")
    assert result.returncode == 2
    assert "--port: must be at most 65535, got 99999" in result.stderr
