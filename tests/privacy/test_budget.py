import logging
import math

import dp_accounting
import numpy as np
import pytest
from scipy import optimize, special, stats

from keras_harden.privacy import epsilon, noise_multiplier, steps_for

# MNIST as in Abadi et al. (2016) and TensorFlow Privacy's tutorial: 60,000
# examples, batches of 256, 60 epochs, delta 1e-5; TF Privacy counts
# ceil(60 * 60000 / 256) = ceil(14062.5) = 14063 steps
MNIST_Q = 256 / 60000
MNIST_STEPS = 14063

DEFAULT_ORDERS = (
    [1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512, 1024]
)


def _reference(noise, q, steps, delta, accountant):
    """dp-accounting's own figure for the same DP-SGD events."""
    if accountant == "rdp":
        ledger = dp_accounting.rdp.RdpAccountant()
    else:
        ledger = dp_accounting.pld.PLDAccountant()
    ledger.compose(
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(
                q, dp_accounting.GaussianDpEvent(noise)
            ),
            steps,
        )
    )
    return ledger.get_epsilon(delta)


def _sampled_gaussian_rdp(q, noise, order):
    """RDP at an integer order of one Poisson-subsampled Gaussian step, by
    hand (Mironov, Talwar and Zhang 2019, section 3.3):
    `log(sum_k C(a, k) (1 - q)^(a - k) q^k exp((k^2 - k) / (2 noise^2))) / (a - 1)`.
    """
    k = np.arange(order + 1)
    log_binomial = (
        special.gammaln(order + 1)
        - special.gammaln(k + 1)
        - special.gammaln(order - k + 1)
    )
    terms = (
        log_binomial
        + (order - k) * np.log1p(-q)
        + k * np.log(q)
        + (k * k - k) / (2 * noise**2)
    )
    return special.logsumexp(terms) / (order - 1)


def _mnist_by_hand(noise, improved):
    """Epsilon of MNIST DP-SGD over the integer orders 2..256, from the RDP
    above times the number of steps, with the original conversion
    `rdp - log(delta) / (a - 1)` or the improved one (Canonne, Kamath and
    Steinke 2020) `rdp + log(1 - 1/a) - log(delta * a) / (a - 1)`."""
    delta = 1e-5
    best = math.inf
    for order in range(2, 257):
        rdp = MNIST_STEPS * _sampled_gaussian_rdp(MNIST_Q, noise, order)
        if improved:
            eps = rdp + math.log1p(-1 / order) - math.log(delta * order) / (order - 1)
        else:
            eps = rdp - math.log(delta) / (order - 1)
        best = min(best, eps)
    return best


# -- epsilon -------------------------------------------------------------------


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
@pytest.mark.parametrize(
    "noise, q, steps, delta",
    [
        (1.1, MNIST_Q, MNIST_STEPS, 1e-5),
        (0.8, 64 / 1400, 440, 1e-5),
        (3.0, 1.0, 5, 1e-3),
    ],
)
def test_epsilon_is_dp_accountings_figure(noise, q, steps, delta, accountant):
    assert epsilon(noise, q, steps, delta, accountant=accountant) == _reference(
        noise, q, steps, delta, accountant
    )


def test_mnist_tutorial_figure_by_hand():
    # The original RDP-to-DP conversion over integer orders gives TensorFlow
    # Privacy's published figures: 2.92 at noise 1.12 (its tutorial README,
    # 60 epochs) and about 3.0 (3.009) at noise 1.1.
    assert _mnist_by_hand(1.12, improved=False) == pytest.approx(2.922, abs=5e-4)
    assert _mnist_by_hand(1.1, improved=False) == pytest.approx(3.009, abs=5e-4)
    # dp-accounting converts with the improved bound: 2.5971 over the integer
    # orders (best order 8); its default orders add 8.1, 2.5967.
    by_hand = _mnist_by_hand(1.1, improved=True)
    assert by_hand == pytest.approx(2.5971, abs=1e-4)
    eps = epsilon(1.1, MNIST_Q, MNIST_STEPS, 1e-5)
    assert eps == pytest.approx(2.5967, abs=1e-4)
    assert eps <= by_hand  # more orders can only lower the minimum
    # the privacy-loss-distribution accountant is tighter still: 2.38
    assert epsilon(1.1, MNIST_Q, MNIST_STEPS, 1e-5, "pld") == pytest.approx(
        2.3818, abs=1e-3
    )


def test_one_full_batch_gaussian_step_by_hand():
    # sampling_rate=1, one step: the plain Gaussian mechanism, sensitivity 1.
    noise, delta = 2.0, 1e-5
    # RDP: a / (2 noise^2) at each order a, improved conversion, minimised
    # over dp-accounting's default orders
    expected_rdp = min(
        a / (2 * noise**2) + math.log1p(-1 / a) - math.log(delta * a) / (a - 1)
        for a in DEFAULT_ORDERS
    )
    assert epsilon(noise, 1.0, 1, delta) == pytest.approx(expected_rdp, rel=1e-12)
    assert expected_rdp == pytest.approx(2.1657, abs=1e-4)

    # PLD: the exact epsilon of the Gaussian mechanism (Balle and Wang 2018),
    # the root of delta(eps) = Phi(1/(2s) - eps s) - e^eps Phi(-1/(2s) - eps s)
    def exact_delta(eps):
        return (
            stats.norm.cdf(0.5 / noise - eps * noise)
            - math.exp(eps) * stats.norm.cdf(-0.5 / noise - eps * noise)
            - delta
        )

    exact = optimize.brentq(exact_delta, 0.0, 10.0, xtol=1e-12)
    assert exact == pytest.approx(1.99309, abs=1e-5)
    pld = epsilon(noise, 1.0, 1, delta, "pld")
    assert exact <= pld <= exact + 1e-4  # discretised pessimistically


def _strictly_increasing(values):
    return bool(np.all(np.diff(values) > 0))


def test_epsilon_falls_with_noise_and_grows_with_steps_and_rate():
    q = 64 / 1400
    by_noise = [epsilon(z, q, 200, 1e-5) for z in (0.6, 0.9, 1.3, 2.0)]
    assert _strictly_increasing(by_noise[::-1])
    by_steps = [epsilon(1.0, q, s, 1e-5) for s in (1, 10, 100, 1000)]
    assert _strictly_increasing(by_steps)
    by_rate = [epsilon(1.0, r, 100, 1e-5) for r in (0.01, 0.05, 0.2, 1.0)]
    assert _strictly_increasing(by_rate)
    # a larger delta buys a smaller epsilon
    assert epsilon(1.0, q, 100, 1e-3) < epsilon(1.0, q, 100, 1e-6)


def test_pld_epsilon_falls_with_noise_and_grows_with_steps():
    q = 64 / 1400
    by_noise = [epsilon(z, q, 100, 1e-5, "pld") for z in (1.0, 1.5, 2.5)]
    assert _strictly_increasing(by_noise[::-1])
    by_steps = [epsilon(1.5, q, s, 1e-5, "pld") for s in (1, 30, 300)]
    assert _strictly_increasing(by_steps)


def test_pld_is_tighter_than_rdp_for_dp_sgd():
    for noise, q, steps in [(1.1, MNIST_Q, MNIST_STEPS), (1.0, 64 / 1400, 440)]:
        assert epsilon(noise, q, steps, 1e-5, "pld") < epsilon(noise, q, steps, 1e-5)


# -- noise_multiplier ------------------------------------------------------------


@pytest.mark.parametrize(
    "target, q, steps, accountant",
    [
        (3.0, MNIST_Q, MNIST_STEPS, "rdp"),
        (8.0, 64 / 1400, 440, "rdp"),  # below 1: found by halving from 1
        (1.0, 256 / 1400, 60, "rdp"),
        pytest.param(3.0, 64 / 1400, 440, "pld", marks=pytest.mark.slow),
    ],
)
def test_noise_multiplier_round_trip(target, q, steps, accountant):
    tolerance = 1e-3
    z = noise_multiplier(target, 1e-5, q, steps, accountant=accountant)
    spent = epsilon(z, q, steps, 1e-5, accountant)
    # within the budget and close to it (d epsilon / d noise is a few units
    # here, so a noise 1e-3 too large costs at most ~1% of epsilon)
    assert spent <= target
    assert spent == pytest.approx(target, rel=0.01)
    # z* <= z <= z* + tolerance, so 2 * tolerance less noise overspends
    assert epsilon(z - 2 * tolerance, q, steps, 1e-5, accountant) > target


def test_noise_multiplier_matches_dp_accountings_calibration():
    q, steps = 64 / 1400, 440
    ours = noise_multiplier(3.0, 1e-5, q, steps, tolerance=1e-6)
    theirs = dp_accounting.calibrate_dp_mechanism(
        dp_accounting.rdp.RdpAccountant,
        lambda z: dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)),
            steps,
        ),
        3.0,
        1e-5,
    )
    assert ours == pytest.approx(theirs, abs=2e-6)


def test_noise_multiplier_known_values():
    # the noise MNIST needs for epsilon 3 (RDP) is a little under 1.1 (which
    # spends 2.60): 1.014
    assert noise_multiplier(3.0, 1e-5, MNIST_Q, MNIST_STEPS) == pytest.approx(
        1.014, abs=1e-3
    )
    # more steps at the same rate need more noise
    assert noise_multiplier(3.0, 1e-5, 0.05, 400) > noise_multiplier(
        3.0, 1e-5, 0.05, 100
    )


def test_noise_multiplier_out_of_reach():
    with pytest.raises(ValueError, match=r"Received: target_epsilon=1e-09$"):
        noise_multiplier(1e-9, 1e-5, 1.0, 1000)
    with pytest.raises(ValueError, match=r"Received: target_epsilon=1000000.0$"):
        noise_multiplier(1e6, 1e-5, 0.01, 1)


# -- steps_for -------------------------------------------------------------------


def test_steps_for_counts_kerass_fit_steps():
    assert steps_for(60, 256, 60000) == 60 * 235  # ceil(234.375) = 235
    assert steps_for(3, 100, 1000) == 30
    assert steps_for(1, 1400, 1400) == 1
    assert steps_for(2, 1, 7) == 14


# -- arguments -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"noise_multiplier": 0.0}, "Received: noise_multiplier=0.0"),
        ({"noise_multiplier": -1}, "Received: noise_multiplier=-1"),
        ({"sampling_rate": 0.0}, "Received: sampling_rate=0.0"),
        ({"sampling_rate": 1.5}, "Received: sampling_rate=1.5"),
        ({"steps": 0}, "Received: steps=0"),
        ({"steps": 2.5}, "Received: steps=2.5"),
        ({"delta": 0.0}, "Received: delta=0.0"),
        ({"delta": 1.0}, "Received: delta=1.0"),
        ({"accountant": "moments"}, "Received: accountant='moments'"),
    ],
)
def test_epsilon_bad_arguments(kwargs, message):
    arguments = {
        "noise_multiplier": 1.0,
        "sampling_rate": 0.1,
        "steps": 10,
        "delta": 1e-5,
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=f"{message}$"):
        epsilon(**arguments)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target_epsilon": 0.0}, "Received: target_epsilon=0.0"),
        ({"target_epsilon": math.inf}, "Received: target_epsilon=inf"),
        ({"delta": 2.0}, "Received: delta=2.0"),
        ({"sampling_rate": -0.1}, "Received: sampling_rate=-0.1"),
        ({"steps": True}, "Received: steps=True"),
        ({"accountant": "RDP"}, "Received: accountant='RDP'"),
        ({"tolerance": 0}, "Received: tolerance=0"),
    ],
)
def test_noise_multiplier_bad_arguments(kwargs, message):
    arguments = {
        "target_epsilon": 3.0,
        "delta": 1e-5,
        "sampling_rate": 0.1,
        "steps": 10,
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=f"{message}$"):
        noise_multiplier(**arguments)


@pytest.mark.parametrize(
    "args, message",
    [
        ((0, 32, 100), "Received: epochs=0"),
        ((1, 0, 100), "Received: batch_size=0"),
        ((1, 101, 100), "Received: batch_size=101"),
        ((1, 32, 0), "Received: n_examples=0"),
    ],
)
def test_steps_for_bad_arguments(args, message):
    with pytest.raises(ValueError, match=f"{message}$"):
        steps_for(*args)


def test_unconverged_order_notes_are_silenced_and_the_figure_unchanged(caplog):
    # noise 1 at sampling rate 0.183: the series of the fractional orders
    # 1.1 to 1.7 do not converge; dp-accounting drops them and logs a line each
    q = 256 / 1400
    with caplog.at_level("WARNING", logger="absl"):
        reference = _reference(1.0, q, 100, 1e-5, "rdp")
    assert sum("failed to converge" in r.getMessage() for r in caplog.records) >= 5
    caplog.clear()
    with caplog.at_level("WARNING", logger="absl"):
        assert epsilon(1.0, q, 100, 1e-5) == reference
        noise_multiplier(8.0, 1e-5, q, 100, tolerance=0.05)
    assert not [r for r in caplog.records if "failed to converge" in r.getMessage()]
    # the filter is gone afterwards
    assert not logging.getLogger("absl").filters
