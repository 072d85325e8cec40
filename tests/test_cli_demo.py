"""``tripletface demo`` through a real process: one JSON object on stdout, usage errors exit 2."""

import json
from functools import partial

import pytest
from test_cli import run_cli as run_tripletface

run_cli = partial(run_tripletface, "demo", timeout=300)


@pytest.mark.slow
def test_json_prints_one_object_and_the_story_goes_to_stderr(tmp_path):
    out = tmp_path / "out"
    result = run_cli(
        "--json",
        *("--persons", "8", "--unseen", "5", "--images", "2", "--steps", "2", "--size", "16"),
        *("--seed", "3", "--out", str(out)),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1
    figures = json.loads(result.stdout)
    assert list(figures)[:5] == ["seconds", "pixels", "untrained", "random", "semihard"]
    for name in ("pixels", "untrained", "random", "semihard"):
        assert 0 <= figures[name]["rank1"] <= 1
    assert len(figures["semihard"]["active_fraction"]) == 2
    assert figures["config"]["seed"] == 3 and figures["config"]["size"] == 16
    assert (out / "roc.png").is_file() and (out / "semihard" / "last.pt").is_file()
    assert "one-shot rank-1" in result.stderr and "new picture of" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--persons", "1"), "persons must be an integer of at least 2"),
        (("--size", "8"), "size must be an integer of at least 16"),
    ],
)
def test_a_bad_setting_exits_2_with_one_line(args, message):
    result = run_cli(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("tripletface: error: demo: ") and message in result.stderr


def test_an_output_file_exits_2_with_one_line(tmp_path):
    (tmp_path / "taken").write_text("x")
    result = run_cli("--out", str(tmp_path / "taken"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "is a file; give a folder" in result.stderr


def test_a_word_for_a_number_is_a_usage_error():
    result = run_cli("--steps", "many")
    assert result.returncode == 2 and result.stdout == ""
    assert "argument --steps: invalid int value: 'many'" in result.stderr.splitlines()[-1]


def test_the_help_quotes_the_defaults_of_the_pipeline():
    from tripletface.cli.demo import _OPTIONS
    from tripletface.demo import DemoConfig

    defaults = DemoConfig()
    for name, (_, meaning) in _OPTIONS.items():
        assert meaning.endswith(f"({getattr(defaults, name)})"), name
