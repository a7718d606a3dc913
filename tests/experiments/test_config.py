"""experiments.toml: every field parses, and every mistake names the file, the dotted field and the reason."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from leanserve.errors import ConfigError
from leanserve.experiments.config import Arm, load_experiments, parse_experiments

SOURCE = "experiments.toml"

FULL = """
[experiments.digits]
mode = "canary"
arms = [{model = "digits", version = 1}, {model = "digits", version = 2}]
salt = "2026-12"
unit_header = "x-user"
steps = [1, 10, 100]
min_samples_per_step = 300
min_samples = 50
primary_metric = "latency_p99"
non_inferiority_margin = 0.1
max_error_rate_increase = 0.02
max_p99_ratio = 1.5
alpha = 0.01
srm_alpha = 0.0005
srm_test = "sequential"
planned_samples = 5000

[experiments.ranker]
mode = "split"
arms = [{model = "ranker", version = 3, weight = 3}, {model = "ranker", version = 4}, {model = "ranker-lite"}]
primary_metric = "conversion"
max_p99_ratio = 2.0
auto_promote = true

[experiments.embed]
mode = "shadow"
arms = [{model = "minilm", version = 1}, {model = "minilm", version = 2}]
min_shadow_agreement = 0.98
shadow_sample = 0.25
shadow_max_in_flight = 8
"""


def test_every_field_is_read() -> None:
    experiments = parse_experiments(tomllib.loads(FULL), SOURCE)
    canary = experiments["digits"]
    assert canary.name == "digits" and canary.source == SOURCE
    assert canary.arms == (Arm("digits", 1), Arm("digits", 2)) and canary.control == Arm("digits", 1)
    assert canary.effective_salt == "2026-12" and canary.unit_header == "x-user"
    assert canary.steps == (1.0, 10.0, 100.0) and canary.min_samples_per_step == 300 and canary.min_samples == 50
    assert canary.primary_metric == "latency_p99" and canary.non_inferiority_margin == 0.1
    assert (canary.max_error_rate_increase, canary.max_p99_ratio) == (0.02, 1.5)
    assert (canary.alpha, canary.srm_alpha, canary.srm_test) == (0.01, 0.0005, "sequential")
    assert canary.planned_samples == 5000
    split = experiments["ranker"]
    assert [a.weight for a in split.arms] == [3.0, 1.0, 1.0] and split.arms[2].version is None
    assert split.arms[2].label == "ranker-lite:default" and split.uses_feedback and split.auto_promote
    assert split.effective_salt == "ranker"  # the name, by default
    shadow = experiments["embed"]
    assert shadow.min_shadow_agreement == 0.98 and shadow.shadow_sample == 0.25 and shadow.shadow_max_in_flight == 8


ARMS = 'arms = [{model = "m", version = 1}, {model = "m", version = 2}]'
VERSION_0 = '[{model = "m", version = 0}, {model = "m"}]'


def test_defaults() -> None:
    c = parse_experiments(tomllib.loads(f'[experiments.a]\nmode = "split"\n{ARMS}'), SOURCE)["a"]
    assert (c.alpha, c.srm_alpha, c.srm_test) == (0.05, 0.001, "sequential")
    assert (c.primary_metric, c.steps) == ("error_rate", (1, 5, 25, 50, 100))
    assert c.max_error_rate_increase == 0.01 and c.max_p99_ratio == 1.25 and c.min_shadow_agreement is None


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (f'mode = "blue-green"\n{ARMS}', "experiments.x.mode", "not one of"),
        ('mode = "split"', "experiments.x.arms", "missing"),
        ('mode = "split"\narms = [{model = "m"}]', "experiments.x.arms", "at least 2 arms"),
        (f"mode = 'split'\narms = {VERSION_0}", "experiments.x.arms[0].version", "at least 1"),
        ('mode = "split"\narms = [{model = "m", weight = 0}, {model = "n"}]', "experiments.x.arms[0].weight", "than 0"),
        ('mode = "split"\narms = [{model = "m"}, {model = "m"}]', "experiments.x.arms[1]", "already arm 0"),
        ('mode = "split"\narms = [{modle = "m"}, {model = "n"}]', "experiments.x.arms[0].modle", "unknown field"),
        ('mode = "canary"\narms = [{model = "a"}, {model = "b"}, {model = "c"}]', "experiments.x.arms", "exactly 2"),
        (f'mode = "canary"\n{ARMS}\nsteps = [1, 50]', "experiments.x.steps", "last step must be 100"),
        (f'mode = "canary"\n{ARMS}\nsteps = [5, 1, 100]', "experiments.x.steps", "must increase"),
        (f'mode = "canary"\n{ARMS}\nsteps = [0, 100]', "experiments.x.steps", "(0, 100]"),
        (f'mode = "split"\n{ARMS}\nsteps = [1, 100]', "experiments.x.steps", "only applies to mode 'canary'"),
        (f'mode = "split"\n{ARMS}\nmin_shadow_agreement = 0.9', "experiments.x.min_shadow_agreement", "only applies"),
        (f'mode = "shadow"\n{ARMS}\nprimary_metric = "reward"', "experiments.x.primary_metric", "feedback"),
        (f'mode = "shadow"\n{ARMS}\nmin_shadow_agreement = 1.5', "experiments.x.min_shadow_agreement", "(0, 1]"),
        (f'mode = "split"\n{ARMS}\nprimary_metric = "clicks"', "experiments.x.primary_metric", "not one of"),
        (f'mode = "split"\n{ARMS}\nalpha = 1.5', "experiments.x.alpha", "strictly between 0 and 1"),
        (f'mode = "split"\n{ARMS}\nmax_p99_ratio = 0.5', "experiments.x.max_p99_ratio", "at least 1"),
        (f'mode = "split"\n{ARMS}\nunit_header = "X-User"', "experiments.x.unit_header", "lower-case"),
        (f'mode = "split"\n{ARMS}\nplanned_samples = 5', "experiments.x.planned_samples", "at least 10"),
    ],
)
def test_mistakes_name_the_file_the_field_and_the_reason(body: str, field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_experiments(tomllib.loads(f"[experiments.x]\n{body}"), SOURCE)
    assert e.value.path == SOURCE and e.value.field == field, str(e.value)
    assert reason in e.value.reason, str(e.value)


def test_tables_outside_experiments_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown table") as e:
        parse_experiments({"experiment": {}}, SOURCE)
    assert e.value.field == "experiment"


def test_load_reads_a_file_and_a_missing_one_means_none(tmp_path: Path) -> None:
    assert load_experiments(tmp_path / "experiments.toml") == {}
    path = tmp_path / "experiments.toml"
    path.write_text(FULL, encoding="utf-8")
    assert set(load_experiments(path)) == {"digits", "ranker", "embed"}
    path.write_text("[experiments.x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML") as e:
        load_experiments(path)
    assert e.value.path == str(path)
