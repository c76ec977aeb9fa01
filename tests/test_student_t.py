"""Student's t quantiles: textbook values, closed forms, symmetry, the normal limit and the coverage they buy."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from noisegrad.stats import student_t
from noisegrad.stats.student_t import interval_halfwidth_factor, student_t_cdf, student_t_quantile

# Textbook t-table values (12.706204736, 3.182446305, 2.364624252, 5.840909309, 1.812461123, 2.042272456),
# extended to 17 significant digits with mpmath at 40 digits; scipy.stats.t.ppf 1.17.1 agrees to 1e-15.
TABLE = [
    (0.975, 1, 12.706204736174693),
    (0.975, 3, 3.1824463052837084),
    (0.975, 7, 2.3646242515927847),
    (0.995, 3, 5.8409093097333554),
    (0.95, 10, 1.8124611228116759),
    (0.975, 30, 2.0422724563012379),
]
# Normal quantiles (scipy.stats.norm.ppf, confirmed by mpmath's erfinv at 30 digits).
NORMAL = [(0.975, 1.959963984540054), (0.995, 2.5758293035489004), (0.9, 1.2815515655446004),
          (1e-10, -6.361340902404056)]


@pytest.mark.parametrize("p, df, expected", TABLE)
def test_quantiles_match_the_t_table(p, df, expected):
    assert student_t_quantile(p, df) == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("p, df, expected", TABLE)
def test_the_interval_factor_is_the_upper_quantile_of_half_the_missed_probability(p, df, expected):
    level = 2 * p - 1
    assert interval_halfwidth_factor(level, df) == pytest.approx(expected, rel=1e-14)


P_VALUES = [1e-12, 1e-4, 0.01, 0.2, 0.25, 0.3, 0.5 - 1e-9, 0.5 + 1e-9, 0.75, 0.975, 1 - 1e-9]


@pytest.mark.parametrize("p", P_VALUES)
def test_one_degree_of_freedom_is_the_cauchy_distribution(p):
    # tan(π (p − ½)), written as a cotangent of the smaller tail beyond the quartiles so as not to cancel
    if p < 0.25:
        cauchy = -1 / math.tan(math.pi * p)
    elif p > 0.75:
        cauchy = 1 / math.tan(math.pi * (1 - p))
    else:
        cauchy = math.tan(math.pi * (p - 0.5))
    assert student_t_quantile(p, 1) == pytest.approx(cauchy, rel=1e-13)
    # just off df = 1, the general solver takes over and must agree with the closed form
    assert student_t_quantile(p, math.nextafter(1.0, 2.0)) == pytest.approx(cauchy, rel=1e-12)


@pytest.mark.parametrize("p", P_VALUES)
def test_two_degrees_of_freedom_match_the_closed_form(p):
    closed_form = (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    assert student_t_quantile(p, 2) == pytest.approx(closed_form, rel=1e-13)
    assert student_t_quantile(p, math.nextafter(2.0, 3.0)) == pytest.approx(student_t_quantile(p, 2), rel=1e-12)


@pytest.mark.parametrize("t", [-1e6, -30.0, -3.0, -0.5, -1e-9, 1e-9, 0.5, 3.0, 30.0])
def test_the_cdf_matches_the_closed_forms_for_one_and_two_degrees_of_freedom(t):
    # P(T ≤ −|t|) = atan(1 / |t|) / π and 1 / (r (r + |t|)) with r = √(2 + t²), forms that do not cancel
    radius = math.sqrt(2 + t * t)
    cauchy_tail, two_df_tail = math.atan(1 / abs(t)) / math.pi, 1 / (radius * (radius + abs(t)))
    assert student_t_cdf(t, 1) == pytest.approx(cauchy_tail if t < 0 else 1 - cauchy_tail, rel=1e-14)
    assert student_t_cdf(t, 2) == pytest.approx(two_df_tail if t < 0 else 1 - two_df_tail, rel=1e-14)


@pytest.mark.parametrize("df", [0.5, 1, 3, 7.5, 30, 1e6])
@pytest.mark.parametrize("p", [2.0 ** -40, 2.0 ** -10, 0.125, 0.375, 0.5 - 2.0 ** -20])
def test_the_quantile_is_odd_about_one_half(p, df):
    # 1 − p is exact for these p, so both calls are asked for the same tail probability
    assert student_t_quantile(1 - p, df) == -student_t_quantile(p, df)
    assert student_t_cdf(-student_t_quantile(p, df), df) == pytest.approx(1 - p, rel=1e-14)


@pytest.mark.parametrize("p, z", NORMAL)
def test_infinite_degrees_of_freedom_give_the_normal_quantile(p, z):
    assert student_t_quantile(p, math.inf) == pytest.approx(z, rel=1e-14)
    assert student_t_cdf(z, math.inf) == pytest.approx(p, rel=1e-14)


@pytest.mark.parametrize("df", [1e4, 1e6, 1e8, 1e10])
def test_large_df_approaches_the_normal_quantile_at_the_cornish_fisher_rate(df):
    # t_p − z_p = (z³ + z) / (4 df) + O(1 / df²) (Abramowitz & Stegun 26.7.5)
    z = NORMAL[0][1]
    gap = student_t_quantile(0.975, df) - z
    assert gap * df == pytest.approx((z ** 3 + z) / 4, rel=1e-3)


@settings(max_examples=300, deadline=None)
@given(p=st.floats(1e-6, 1 - 1e-6), df=st.floats(0.5, 1e4))
def test_the_cdf_of_the_quantile_gives_back_the_probability(p, df):
    # relative in the smaller tail, up to the rounding of probabilities near 1
    assert abs(student_t_cdf(student_t_quantile(p, df), df) - p) <= 1e-10 * min(p, 1 - p) + 2.0 ** -52


@settings(max_examples=100, deadline=None)
@given(p=st.floats(0.5, 1 - 1e-12, exclude_min=True), df=st.floats(0.5, 1e4))
def test_more_degrees_of_freedom_give_a_narrower_interval(p, df):
    assert student_t_quantile(p, df * 1.5) < student_t_quantile(p, df)


def test_a_t_interval_from_four_normal_samples_covers_the_mean_95_percent():
    repetitions = 20_000
    samples = torch.randn(repetitions, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    mean, stderr = samples.mean(dim=1), samples.std(dim=1) / 2  # the true mean is 0; 3 degrees of freedom

    def coverage(factor: float) -> float:
        return (mean.abs() <= factor * stderr).double().mean().item()

    def binomial_stderr(probability: float) -> float:
        return math.sqrt(probability * (1 - probability) / repetitions)

    assert abs(coverage(interval_halfwidth_factor(0.95, 3)) - 0.95) < 4 * binomial_stderr(0.95)
    # the normal factor misses about one mean in seven: P(|T_3| ≤ 1.96) = 0.85515 (scipy)
    assert abs(coverage(1.96) - 0.8551) < 4 * binomial_stderr(0.8551)


def test_per_element_degrees_of_freedom_give_per_element_factors():
    df = torch.tensor([[7, 3], [3, 7]])
    factors = interval_halfwidth_factor(0.95, df)
    assert factors.shape == df.shape and factors.device == df.device
    assert factors.dtype == torch.get_default_dtype()
    t_7, t_3 = 2.3646242515927847, 3.1824463052837084
    torch.testing.assert_close(factors, torch.tensor([[t_7, t_3], [t_3, t_7]], dtype=factors.dtype))


def test_floating_degrees_of_freedom_keep_their_dtype_and_allow_infinity():
    df = torch.tensor([3.0, math.inf, 3.0], dtype=torch.float64)
    factors = interval_halfwidth_factor(0.95, df)
    assert factors.dtype == torch.float64
    assert factors.tolist() == pytest.approx([3.1824463052837084, 1.959963984540054, 3.1824463052837084], rel=1e-14)


def test_each_distinct_degree_of_freedom_is_solved_once(monkeypatch):
    calls, solve = [], student_t._abs_quantile

    def counted(*args):
        calls.append(args)
        return solve(*args)

    monkeypatch.setattr(student_t, "_abs_quantile", counted)
    df = torch.tensor([7, 3]).repeat(5000)
    factors = interval_halfwidth_factor(0.95, df)
    assert len(calls) == 2 and factors.shape == (10_000,)


@pytest.mark.parametrize("p", [0.0, 1.0, -0.5, 1.5, math.nan])
def test_a_probability_outside_0_1_is_refused_naming_p(p):
    with pytest.raises(ValueError, match=r"^p must"):
        student_t_quantile(p, 3)


@pytest.mark.parametrize("df", [0, -1.0, -math.inf, math.nan])
def test_a_non_positive_df_is_refused_naming_df(df):
    with pytest.raises(ValueError, match=r"^df must"):
        student_t_quantile(0.9, df)
    with pytest.raises(ValueError, match=r"^df must"):
        student_t_cdf(1.0, df)


def test_the_interval_factor_names_a_bad_level_or_df():
    with pytest.raises(ValueError, match=r"^level must"):
        interval_halfwidth_factor(1.0, 3)
    with pytest.raises(ValueError, match=r"^df must"):
        interval_halfwidth_factor(0.95, torch.tensor([3, 0, 7]))
    with pytest.raises(ValueError, match=r"^t must"):
        student_t_cdf(math.nan, 3)
