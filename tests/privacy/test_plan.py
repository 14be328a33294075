import math

import keras
import pytest

from keras_harden.privacy import Plan, epsilon, noise_multiplier, suggest
from keras_harden.privacy.plan import default_batch_sizes, default_delta
from tests.toolkit import assert_config_round_trip

N = 1400  # the digits training set, roughly


@pytest.fixture(scope="module")
def plan():
    return suggest(N, 3.0, epochs=[10, 40], batch_sizes=[32, 128])


def test_every_candidate_meets_the_budget_with_the_least_noise(plan):
    assert plan.delta == 1e-5 and plan.n_examples == N and len(plan) == 4
    assert {(c["batch_size"], c["epochs"]) for c in plan} == {
        (32, 10),
        (32, 40),
        (128, 10),
        (128, 40),
    }
    for c in plan:
        # ceil(1400 / 32) = 44 and ceil(1400 / 128) = 11 steps an epoch
        per_epoch = {32: 44, 128: 11}[c["batch_size"]]
        assert c["steps"] == c["epochs"] * per_epoch
        assert c["sampling_rate"] == c["batch_size"] / N
        assert c["noise_multiplier"] == noise_multiplier(
            3.0, 1e-5, c["sampling_rate"], c["steps"]
        )
        assert c["epsilon"] == epsilon(
            c["noise_multiplier"], c["sampling_rate"], c["steps"], 1e-5
        )
        assert 0.99 * 3.0 <= c["epsilon"] <= 3.0
        assert c["noise_ratio"] == c["noise_multiplier"] / (
            c["batch_size"] * math.sqrt(c["steps"])
        )


def test_ranked_by_the_noise_over_the_run(plan):
    ratios = [c["noise_ratio"] for c in plan]
    assert ratios == sorted(ratios)
    # at a fixed budget a larger batch and more epochs each carry less noise
    # over the run, though they need a larger noise multiplier
    assert [(c["batch_size"], c["epochs"]) for c in plan] == [
        (128, 40),
        (32, 40),
        (128, 10),
        (32, 10),
    ]
    by_key = {(c["batch_size"], c["epochs"]): c for c in plan}
    assert by_key[128, 40]["noise_multiplier"] > by_key[32, 40]["noise_multiplier"]
    for epochs in (10, 40):
        assert by_key[128, epochs]["noise_ratio"] < by_key[32, epochs]["noise_ratio"]
    for batch in (32, 128):
        assert by_key[batch, 40]["noise_ratio"] < by_key[batch, 10]["noise_ratio"]
    assert plan.best is plan[0] and plan.best["batch_size"] == 128


def test_markdown_table(plan):
    lines = plan.to_markdown().splitlines()
    assert len(lines) == 2 + len(plan)
    assert lines[0].startswith("| rank | batch size | epochs | steps |")
    best = plan.best
    spent = math.floor(best["epsilon"] * 1e3) / 1e3  # rounded down
    assert lines[2] == (
        f"| 1 | 128 | 40 | 440 | 0.0914 | {best['noise_multiplier']:.3g} | "
        f"{spent:.3f} | {1e3 * best['noise_ratio']:.3g} | 1 |"
    )
    last = plan[-1]
    assert lines[-1].endswith(f"| {last['noise_ratio'] / best['noise_ratio']:.3g} |")


def test_plan_config_round_trip(plan):
    revived = assert_config_round_trip(plan)
    assert revived.candidates == plan.candidates
    assert revived.to_markdown() == plan.to_markdown()
    assert isinstance(keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(plan)), Plan)  # fmt: skip


def test_default_delta_is_well_below_one_over_n():
    # 1 / (10 * 1400) = 7.1e-5 -> 1e-5; 1 / 600000 = 1.7e-6 -> 1e-6;
    # 1 / (10 * 10000) = 1e-5 exactly -> 1e-5; 1 / 100 -> 1e-2
    assert default_delta(1400) == 1e-5
    assert default_delta(60000) == 1e-6
    assert default_delta(10000) == 1e-5
    assert default_delta(10) == 1e-2
    for n in (7, 1400, 50000, 10**7):
        assert default_delta(n) <= 1 / (10 * n) < 10 * default_delta(n)


def test_default_batch_sizes():
    assert default_batch_sizes(1400) == (16, 32, 64, 128, 256)  # 350 caps
    assert default_batch_sizes(60000) == (16, 32, 64, 128, 256, 512, 1024, 2048,
                                          4096, 8192)  # fmt: skip
    assert default_batch_sizes(40) == (16,)
    assert default_batch_sizes(10) == (10,)


def test_unreachable_candidates_are_left_out():
    # one step on 10 examples: epsilon 50 needs noise 0.19 at batch 10 (all of
    # the data); fine. A budget of 1e6 needs almost none anywhere.
    plan = suggest(10, 50.0, epochs=[1], batch_sizes=[10])
    assert len(plan) == 1 and plan.best["noise_multiplier"] > 1e-3
    with pytest.raises(ValueError, match=r"Received: target_epsilon=1000000.0$"):
        suggest(10, 1e6, epochs=[1], batch_sizes=[10])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_examples": 0}, "Received: n_examples=0"),
        ({"target_epsilon": 0}, "Received: target_epsilon=0"),
        ({"delta": 1.5}, "Received: delta=1.5"),
        ({"epochs": []}, r"Received: epochs=\[\]"),
        ({"epochs": [10, 0]}, r"Received: epochs=\[10, 0\]"),
        ({"batch_sizes": [64, 2000]}, r"Received: batch_sizes=\[64, 2000\]"),
        ({"batch_sizes": "64"}, "Received: batch_sizes=None"),
        ({"accountant": "gauss"}, "Received: accountant='gauss'"),
    ],
)
def test_bad_arguments(kwargs, message):
    arguments = {"n_examples": N, "target_epsilon": 3.0}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=f"{message}$"):
        suggest(**arguments)


def test_plan_bad_candidates():
    with pytest.raises(ValueError, match=r"Received: candidates=\[\]$"):
        Plan(N, 3.0, 1e-5, "rdp", [])
    with pytest.raises(ValueError, match=r"Received: candidates=\[\{'epochs': 1\}\]$"):
        Plan(N, 3.0, 1e-5, "rdp", [{"epochs": 1}])
