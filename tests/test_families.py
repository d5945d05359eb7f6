"""Component families: links, support checks, configuration, and every predictive query on
hand-built posteriors whose predictive is a known mixture (checked against scipy.stats)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _posteriors import head_bias_posterior
from scipy import optimize, stats
from scipy.special import logit, logsumexp

import bayes_mdn as bm
from bayes_mdn.families import inverse_softplus
from bayes_mdn.scaling import Standardizer

F = bm.families
WEIGHTS = np.array([0.3, 0.7])
X = np.array([[-1.0], [0.0], [2.0]])  # the predictive is the same at every input


def family_posterior(family, raw: dict[str, np.ndarray], *, num_outputs: int = 1,
                     y_shift: float = 0.0, y_scale: float = 1.0) -> bm.Posterior:
    """One-draw posterior whose raw head outputs are `raw` (each (K * d,)) at every input:
    no hidden layer, zero head kernels, the raw values as head biases."""
    raw = {"logits": np.log(WEIGHTS), **raw}
    return head_bias_posterior(family, {head: np.ravel(bias) for head, bias in raw.items()},
                               num_components=WEIGHTS.size, num_outputs=num_outputs,
                               y_shift=y_shift, y_scale=y_scale)


# Each case: the family, its raw head outputs, the scipy components in original units, and
# the standardisation applied (location-scale families are checked with a non-trivial one).
SHIFT, SCALE = 1.5, 2.0


def _studentt():
    loc, scale, df = np.array([-1.0, 1.5]), np.array([0.5, 1.0]), np.array([3.0, 8.0])
    raw = {"loc": loc, "scale": inverse_softplus(scale - 1e-3), "df": np.log(df - 2.0)}
    comps = [stats.t(d, SCALE * m + SHIFT, SCALE * s)
             for m, s, d in zip(loc, scale, df, strict=True)]
    return F.StudentT(), raw, comps, (SHIFT, SCALE)


def _laplace():
    loc, scale = np.array([-1.0, 1.5]), np.array([0.5, 1.0])
    raw = {"loc": loc, "scale": inverse_softplus(scale - 1e-3)}
    comps = [stats.laplace(SCALE * m + SHIFT, SCALE * s) for m, s in zip(loc, scale, strict=True)]
    return F.Laplace(), raw, comps, (SHIFT, SCALE)


def _lognormal():
    loc, scale = np.array([0.0, 1.2]), np.array([0.3, 0.5])
    raw = {"loc": loc, "scale": inverse_softplus(scale - 1e-3)}
    comps = [stats.lognorm(s, scale=np.exp(m)) for m, s in zip(loc, scale, strict=True)]
    return F.LogNormal(), raw, comps, (0.0, 1.0)


def _gamma():
    mean, conc = np.array([2.0, 6.0]), np.array([2.5, 20.0])
    raw = {"mean": np.log(mean), "concentration": np.log(conc - 1e-2)}
    comps = [stats.gamma(a, scale=m / a) for m, a in zip(mean, conc, strict=True)]
    return F.Gamma(), raw, comps, (0.0, 1.0)


def _beta():
    mean, conc = np.array([0.3, 0.8]), np.array([5.0, 30.0])
    raw = {"mean": logit(mean), "concentration": np.log(conc - 1e-2)}
    comps = [stats.beta(k * m, k * (1 - m)) for m, k in zip(mean, conc, strict=True)]
    return F.Beta(), raw, comps, (0.0, 1.0)


def _poisson():
    rate = np.array([2.0, 9.0])
    return F.Poisson(), {"rate": np.log(rate)}, [stats.poisson(r) for r in rate], (0.0, 1.0)


def _negative_binomial():
    mean, conc = np.array([3.0, 12.0]), np.array([2.0, 15.0])
    raw = {"mean": np.log(mean), "concentration": np.log(conc - 1e-2)}
    comps = [stats.nbinom(r, r / (r + m)) for m, r in zip(mean, conc, strict=True)]
    return F.NegativeBinomial(), raw, comps, (0.0, 1.0)


CASES = {"studentt": _studentt, "laplace": _laplace, "lognormal": _lognormal, "gamma": _gamma,
         "beta": _beta, "poisson": _poisson, "negative_binomial": _negative_binomial}


class Reference:
    """The scipy mixture 0.3 comps[0] + 0.7 comps[1]."""

    def __init__(self, comps, discrete):
        self.comps, self.discrete = comps, discrete

    def logpdf(self, y):
        y = np.asarray(y, np.float64)
        with np.errstate(divide="ignore"):
            parts = [c.logpmf(y) if self.discrete else c.logpdf(y) for c in self.comps]
        return logsumexp(np.stack(parts) + np.log(WEIGHTS)[:, None], axis=0)

    def cdf(self, y):
        return sum(w * c.cdf(y) for w, c in zip(WEIGHTS, self.comps, strict=True))

    def mean(self):
        return float(sum(w * c.mean() for w, c in zip(WEIGHTS, self.comps, strict=True)))

    def variance(self):
        mean = self.mean()
        return float(sum(w * (c.var() + (c.mean() - mean) ** 2)
                         for w, c in zip(WEIGHTS, self.comps, strict=True)))

    def ppf(self, q):
        if self.discrete:  # smallest k with F(k) >= q
            k = np.arange(0, 2000)
            return float(k[np.argmax(self.cdf(k) >= q)])
        lo = min(c.ppf(q) for c in self.comps)
        hi = max(c.ppf(q) for c in self.comps)
        return optimize.brentq(lambda y: self.cdf(y) - q, lo, hi, xtol=1e-12) if lo < hi else lo


@functools.cache
def build_case(name):
    family, raw, comps, (shift, scale) = CASES[name]()
    posterior = family_posterior(family, raw, y_shift=shift, y_scale=scale)
    return name, posterior.predictive(X), Reference(comps, family.discrete)


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    return build_case(request.param)


#: Grid queries compile three more kernels per family: a count family (the integer-grid
#: code paths) runs by default, the others with the slow tests.
GRID_CASES = [name if name == "poisson"
              else pytest.param(name, marks=pytest.mark.slow) for name in CASES]


def _points(name, ref):
    """Query points: inside the support, on its edges and outside it."""
    lo, hi = ref.ppf(0.001), ref.ppf(0.999)
    inside = np.linspace(lo, hi, 9)
    if name in ("poisson", "negative_binomial"):
        return np.concatenate([np.round(inside), [-1.0, 0.0, 2.5, 7.9]])
    if name in ("gamma", "lognormal"):
        return np.concatenate([inside, [-1.0, 0.0]])
    if name == "beta":
        return np.concatenate([inside, [-0.5, 0.0, 1.0, 1.5]])
    return inside


# --------------------------------------------------------------------------- predictive
def test_log_prob_and_cdf_match_scipy(case):
    name, pred, ref = case
    for y in _points(name, ref):
        targets = np.full((X.shape[0], 1), y)
        expected = ref.logpdf([y])[0]
        if ref.discrete and y != np.floor(y):
            expected = -np.inf  # no mass between the integers
        got = pred.log_prob(targets)
        assert not np.isnan(got).any()
        if np.isinf(expected):
            assert np.all(got == -np.inf), (name, y, got)
        else:
            np.testing.assert_allclose(got, expected, atol=2e-4, rtol=1e-4, err_msg=f"{y}")
        # The cdf of a discrete mixture at a non-integer is the cdf at floor(y).
        np.testing.assert_allclose(pred.cdf(targets)[:, 0], ref.cdf(y), atol=2e-5,
                                   err_msg=f"{name} cdf at {y}")


def test_quantiles_invert_the_cdf(case):
    _, pred, ref = case
    levels = np.array([0.001, 0.05, 0.3, 0.5, 0.7, 0.95, 0.999])
    quantiles = pred.quantiles(levels)  # (Q, M, 1)
    assert quantiles.shape == (levels.size, X.shape[0], 1)
    assert np.all(np.diff(quantiles, axis=0) >= 0)
    expected = np.array([ref.ppf(q) for q in levels])
    if ref.discrete:
        # Exactly the smallest integer k with F(k) >= q.
        np.testing.assert_array_equal(quantiles[:, :, 0], np.repeat(expected[:, None], 3, 1))
        for i, level in enumerate(levels):
            assert np.all(pred.cdf(quantiles[i])[:, 0] >= level)
            assert np.all(pred.cdf(quantiles[i] - 1)[:, 0] < level)
    else:
        np.testing.assert_allclose(quantiles[:, 0, 0], expected, rtol=2e-5, atol=2e-5)
        for i, level in enumerate(levels):
            np.testing.assert_allclose(pred.cdf(quantiles[i])[:, 0], level, atol=5e-5)


def test_density_or_mass_is_normalised(case):
    _, pred, ref = case
    if ref.discrete:
        grid = np.arange(0.0, 400.0)
        mass = np.exp(pred.log_prob_grid(grid))
        np.testing.assert_allclose(mass.sum(axis=1), 1.0, atol=1e-5)
        # Non-integers carry no mass.
        assert np.all(pred.log_prob_grid(grid[:5] + 0.5) == -np.inf)
        return
    lower, upper = ref.ppf(1e-7), ref.ppf(1 - 1e-7)
    grid = np.linspace(lower, upper, 20001)
    density = np.exp(pred.log_prob_grid(grid))
    np.testing.assert_allclose(np.trapezoid(density, grid, axis=1), 1.0, atol=2e-4)


def test_moments_match_scipy_and_samples(case):
    _, pred, ref = case
    np.testing.assert_allclose(pred.mean(), ref.mean(), rtol=1e-5)
    np.testing.assert_allclose(pred.variance(), ref.variance(), rtol=1e-4)
    samples = pred.sample(jax.random.key(0), num_samples=20_000)
    assert samples.shape == (20_000, X.shape[0], 1) and samples.dtype.kind == "f"
    assert np.all(np.isfinite(samples))
    error = np.sqrt(ref.variance() / samples.shape[0])
    np.testing.assert_allclose(samples.mean(axis=0), ref.mean(), atol=5 * error)
    np.testing.assert_allclose(samples.var(axis=0), ref.variance(), rtol=0.08)
    flat = samples[:, 0, 0]
    if ref.discrete:
        assert np.all(flat == np.round(flat)) and flat.min() >= 0
        values, counts = np.unique(flat, return_counts=True)
        expected = np.exp(ref.logpdf(values)) * flat.size
        big = expected > 50  # a chi-square-like check on the well-populated counts
        assert np.all(np.abs(counts[big] - expected[big]) < 5 * np.sqrt(expected[big]))
    else:
        assert stats.kstest(flat[:5000], ref.cdf).pvalue > 0.01


@pytest.mark.parametrize("name", GRID_CASES)
def test_modes_hdr_and_entropy(name):
    _, pred, ref = build_case(name)
    lower, upper = ref.ppf(1e-6), ref.ppf(1 - 1e-6)
    if ref.discrete:
        grid = np.arange(0.0, upper + 2)
        log_mass = ref.logpdf(grid)
        padded = np.concatenate([[-np.inf], log_mass, [-np.inf]])
        peaks = grid[(log_mass > padded[:-2]) & (log_mass >= padded[2:])]
        entropy = -np.sum(np.exp(log_mass) * log_mass)
    else:
        grid = np.linspace(lower, upper, 200_001)
        log_density = ref.logpdf(grid)
        inner = log_density[1:-1]
        peaks = grid[1:-1][(inner > log_density[:-2]) & (inner >= log_density[2:])]
        entropy = -np.trapezoid(np.exp(log_density) * log_density, grid)
    peaks = peaks[np.exp(ref.logpdf(peaks)) >= 1e-3 * np.exp(ref.logpdf(peaks)).max()]
    modes = pred.modes()
    assert len(modes) == X.shape[0]
    tolerance = 0 if ref.discrete else 2e-3 * (upper - lower)
    np.testing.assert_allclose(np.sort(modes[0][:, 0]), np.sort(peaks), atol=tolerance)

    total, _, information = pred.entropy_decomposition()
    np.testing.assert_allclose(total, entropy, atol=2e-3)
    np.testing.assert_allclose(information, 0.0, atol=1e-5)

    for level in (0.5, 0.9):
        regions = pred.hdr(level)
        assert len(regions) == X.shape[0]
        region = regions[0]
        assert region.shape[1] == 2 and np.all(region[:, 0] <= region[:, 1])
        if ref.discrete:
            members = np.concatenate([np.arange(a, b + 1) for a, b in region])
            assert np.all(members == np.round(members))
            mass = np.exp(ref.logpdf(members))
            # Holds the level, and is minimal: dropping its least likely member falls short.
            assert mass.sum() >= level - 1e-6
            assert mass.sum() - mass.min() < level
            # Every member is at least as likely as every non-member.
            outside = np.setdiff1d(np.arange(0.0, upper + 2), members)
            assert mass.min() >= np.exp(ref.logpdf(outside)).max() - 1e-7
        else:
            mass = sum(ref.cdf(b) - ref.cdf(a) for a, b in region)
            np.testing.assert_allclose(mass, level, atol=3e-3)


# --------------------------------------------------------------------------- MVN
def _mvn_posterior():
    """Two 2-D components in standardised units: corr +0.8 and -0.6, shift 1, scale 2/0.5."""
    loc = np.array([[-1.0, 0.5], [1.0, -0.5]])
    cov = [np.array([[1.0, 0.8 * 0.7], [0.8 * 0.7, 0.49]]),
           np.array([[0.25, -0.6 * 0.5 * 1.2], [-0.6 * 0.5 * 1.2, 1.44]])]
    chol = [np.linalg.cholesky(c) for c in cov]
    raw = {"loc": loc.reshape(-1),
           "scale": inverse_softplus(np.array([np.diag(c) for c in chol]) - 1e-3).reshape(-1),
           "tril": np.array([c[1, 0] for c in chol])}
    shift, scale = np.array([1.0, 1.0]), np.array([2.0, 0.5])
    model = bm.MDN(num_components=2, hidden_sizes=(), family=F.MultivariateNormal())
    draws = {}
    for head, bias in {"logits": np.log(WEIGHTS), **raw}.items():
        bias = np.asarray(bias, np.float32).reshape(1, 1, -1)
        draws[f"{head}.kernel"] = np.zeros((1, 1, 1, bias.shape[-1]), np.float32)
        draws[f"{head}.bias"] = bias
    standardizer = Standardizer(np.zeros(1), np.ones(1), shift, scale)
    posterior = bm.Posterior(model=model, method="map", draws=draws, standardizer=standardizer)
    comps = [stats.multivariate_normal(m * scale + shift, np.diag(scale) @ c @ np.diag(scale))
             for m, c in zip(loc, cov, strict=True)]
    return posterior, comps


def test_multivariate_normal_predictive():
    posterior, comps = _mvn_posterior()
    pred = posterior.predictive(X)
    assert pred.event_shape == (2,)
    y = np.array([[0.0, 1.0], [2.0, 0.5], [-1.0, 1.5]])
    expected = logsumexp(np.log(WEIGHTS)[:, None] + np.stack([c.logpdf(y) for c in comps]), 0)
    np.testing.assert_allclose(pred.log_prob(y), expected, rtol=1e-5)
    # Marginal cdf per output and quantiles that invert it.
    sd = np.sqrt(np.stack([np.diag(c.cov) for c in comps]))  # (K, D)
    means = np.stack([c.mean for c in comps])
    marginal = np.sum(WEIGHTS[:, None, None] * stats.norm.cdf(y[None], means[:, None],
                                                              sd[:, None]), axis=0)
    np.testing.assert_allclose(pred.cdf(y), marginal, atol=1e-5)
    quantiles = pred.quantiles([0.1, 0.5, 0.9])
    for i, level in enumerate((0.1, 0.5, 0.9)):
        np.testing.assert_allclose(pred.cdf(quantiles[i]), level, atol=5e-5)
    # Moments against the closed form and against samples, including the covariance.
    mean = WEIGHTS @ means
    second = sum(w * (c.cov + np.outer(c.mean, c.mean))
                 for w, c in zip(WEIGHTS, comps, strict=True))
    covariance = second - np.outer(mean, mean)
    np.testing.assert_allclose(pred.mean(), np.tile(mean, (3, 1)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pred.variance(), np.tile(np.diag(covariance), (3, 1)), rtol=1e-5)
    samples = pred.sample(jax.random.key(0), num_samples=40_000)[:, 0]
    np.testing.assert_allclose(np.cov(samples.T), covariance, atol=0.03 * covariance.max())
    # Component parameters in original units assemble into the right covariances.
    log_weights, params = pred[:1].mixture_parameters()
    matrices = np.asarray(F.MultivariateNormal().covariance_matrix(
        {name: jnp.asarray(value) for name, value in params.items()}))[0]
    for k, component in enumerate(comps):
        np.testing.assert_allclose(matrices[k], component.cov, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.exp(log_weights[0]), WEIGHTS, rtol=1e-6)
    # Grid queries refuse D > 1 with advice.
    with pytest.raises(ValueError, match="one output"):
        pred.hdr(0.9)
    with pytest.raises(ValueError, match="one output"):
        pred.modes()


def test_multivariate_normal_diagonal_matches_normal():
    loc, scale = np.array([-1.0, 0.5, 1.0, -0.5]), np.array([0.5, 1.0, 0.7, 0.3])
    raw = {"loc": loc, "scale": inverse_softplus(scale - 1e-3)}
    mvn = family_posterior(F.MultivariateNormal(covariance="diagonal"), raw, num_outputs=2)
    normal = family_posterior(F.Normal(), raw, num_outputs=2)
    y = np.array([[0.0, 1.0], [2.0, 0.5], [-1.0, 1.5]])
    np.testing.assert_allclose(mvn.predictive(X).log_prob(y), normal.predictive(X).log_prob(y),
                               rtol=1e-6)


# --------------------------------------------------------------------------- families
def test_studentt_fixed_df_moments():
    raw = {"loc": np.array([0.0, 1.0]), "scale": np.array([0.5, 0.5])}
    cauchy = family_posterior(F.StudentT(df=1.0), raw).predictive(X)
    with pytest.raises(ValueError, match=r"df=1\.0 has no mean"):
        cauchy.mean()
    with pytest.raises(ValueError, match="no finite variance"):
        cauchy.variance()
    with pytest.raises(ValueError, match="no finite variance"):
        cauchy.variance_decomposition()
    heavy = family_posterior(F.StudentT(df=1.5), raw).predictive(X)
    with pytest.raises(ValueError, match="needs df > 2"):
        heavy.variance()
    # Learned df with min_df = 1: the variance of a component with df <= 2 is +inf, never NaN.
    learned = family_posterior(F.StudentT(min_df=1.0),
                               {**raw, "df": np.log(np.array([0.5, 10.0]))}).predictive(X)
    assert np.all(learned.variance() == np.inf)
    assert np.isfinite(learned.mean()).all()


def test_studentt_log_density_is_accurate_for_large_df():
    family = F.StudentT()
    for df in (3.0, 1e3, 1e6, 1e9):
        params = {"loc": jnp.zeros((1, 1)), "scale": jnp.ones((1, 1)),
                  "df": jnp.full((1, 1), df, jnp.float32)}
        value = family.distribution(params).log_prob(jnp.full((1, 1), 0.7))
        np.testing.assert_allclose(float(value[0]), stats.t(df).logpdf(0.7), atol=1e-5)


def test_links_and_initial_biases_are_finite_and_on_the_data():
    rng = np.random.default_rng(0)
    data = {
        "normal": rng.normal(size=(500, 1)), "studentt": rng.normal(size=(500, 1)),
        "laplace": rng.normal(size=(500, 1)), "lognormal": rng.lognormal(size=(500, 1)),
        "gamma": rng.gamma(2.0, 3.0, size=(500, 1)), "beta": rng.beta(2, 5, size=(500, 1)),
        "poisson": rng.poisson(4.0, size=(500, 1)).astype(float),
        "negative_binomial": rng.poisson(40.0, size=(500, 1)).astype(float),
        "multivariate_normal": rng.normal(size=(500, 3)),
    }
    def evaluate(family, raw, y):
        """Moments, medians, and log-densities at `y` for `raw` and for extreme raw values
        (one compiled program per family; eager JAX would compile op by op)."""
        params = family.constrain(raw, jnp.ones(y.shape[-1]))
        extremes = [family.constrain({head: jnp.full_like(value, bound)
                                      for head, value in raw.items()}, jnp.ones(y.shape[-1]))
                    for bound in (-1e4, 1e4)]
        # The median (no icdf needed): a LogNormal's mean can lie beyond the data.
        median = jnp.exp(params["loc"]) if "loc" in params and not family.standardize_y \
            else family.mean(params)
        return (family.mean(params), family.variance(params), median,
                [family.distribution(p).log_prob(y[:, None, :]) for p in extremes])

    for name, y in data.items():
        family = bm.families.resolve_family(name)
        num_outputs = y.shape[1]
        bias = family.initial_head_bias(y, 3)
        assert set(bias) == set(family.head_dims(num_outputs))
        raw = {head: jnp.asarray(bias[head], jnp.float32).reshape(3, width)
               for head, width in family.head_dims(num_outputs).items()}
        mean, variance, median, extreme_lps = jax.jit(evaluate, static_argnums=0)(
            family, raw, jnp.asarray(y[:5], jnp.float32))
        assert np.all(np.isfinite(mean)) and np.all(np.isfinite(variance))
        # Components start with their centres spread out inside the data range.
        median = np.asarray(median)
        assert np.all(median.min(0) >= y.min(0)) and np.all(median.max(0) <= y.max(0))
        assert np.all(np.diff(median[:, 0]) > 0), name
        # Extreme raw outputs still give finite parameters and log-densities, never NaN.
        assert not any(np.isnan(np.asarray(lp)).any() for lp in extreme_lps), name


def test_discrete_hdr_refuses_a_support_wider_than_the_budget():
    pred = family_posterior(F.Poisson(), {"rate": np.log([1e6, 1e6])}).predictive(
        X, max_elements=1000)
    with pytest.raises(ValueError, match=r"spreads over \d+ integers.*max_elements"):
        pred.hdr(0.9)
    with pytest.raises(ValueError, match="max_elements"):
        pred.entropy_decomposition()


def test_global_df_is_a_family_site():
    family = F.StudentT(df="global", min_df=1.5)
    model = bm.MDN(num_components=2, hidden_sizes=(3,), family=family)
    shapes = model.latent_shapes(1, 2)
    assert list(shapes)[-1] == "family.df" and shapes["family.df"] == (2,)
    assert "df" not in family.head_dims(2)  # no head: one df per output
    prior = family.latent_distributions(2)["family.df"]
    # Gamma(2, 0.1) on df - min_df: nothing below min_df, the Gamma density above it.
    values = jnp.array([[1.0, 1.5], [3.5, 21.5]])
    log_prior = np.asarray(prior.log_prob(values))
    assert log_prior[0] == -np.inf
    np.testing.assert_allclose(log_prior[1], stats.gamma(2.0, scale=10.0).logpdf([2.0, 20.0])
                               .sum(), rtol=1e-5)
    raw = {"loc": jnp.zeros((4, 2, 2)), "scale": jnp.zeros((4, 2, 2))}
    params = family.constrain(raw, jnp.ones(2), {"family.df": jnp.array([3.0, 7.0])})
    np.testing.assert_array_equal(params["df"][..., 1], 7.0)
    with pytest.raises(ValueError, match=r"needs the value of its 'family\.df' site"):
        family.constrain(raw, jnp.ones(2))


# --------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("family", [
    F.Normal(min_scale=0.01), F.StudentT(), F.StudentT(df=4.0, min_scale=0.1),
    F.StudentT(df="global", min_df=1.0, df_prior=(3, 0.2)),
    F.Laplace(min_scale=0.01), F.MultivariateNormal(), F.MultivariateNormal("diagonal", 3),
    F.LogNormal(), F.Gamma(min_concentration=0.5), F.Beta(), F.Poisson(),
    F.NegativeBinomial(min_concentration=0.1),
])
def test_config_round_trip(family):
    import json

    config = json.loads(json.dumps(family.to_config()))
    assert F.family_from_config(config) == family
    model = bm.MDN(num_components=2, hidden_sizes=(3,), family=family)
    assert bm.MDN.from_config(json.loads(json.dumps(model.to_config()))) == model


def test_names_and_aliases_resolve():
    expected = {"normal": F.Normal, "studentt": F.StudentT, "Student_T": F.StudentT,
                "laplace": F.Laplace, "lognormal": F.LogNormal, "gamma": F.Gamma,
                "beta": F.Beta, "poisson": F.Poisson, "negative_binomial": F.NegativeBinomial,
                "negbin": F.NegativeBinomial, "mvn": F.MultivariateNormal,
                "multivariate_normal": F.MultivariateNormal}
    for name, cls in expected.items():
        assert type(bm.MDN(family=name).family) is cls
    for name in F.__all__:
        assert hasattr(F, name)
    with pytest.raises(ValueError, match="Unknown family 'weibull'; choose one of"):
        F.resolve_family("weibull")
    with pytest.raises(ValueError, match="Unknown family 'weibull' in saved configuration"):
        F.family_from_config({"name": "weibull"})


def test_bad_family_options_are_rejected():
    with pytest.raises(ValueError, match=r"`df` must be a positive number .*'head'.*'global'"):
        F.StudentT(df="per_input")
    with pytest.raises(ValueError, match="`df` must be a finite number > 0"):
        F.StudentT(df=0.0)
    with pytest.raises(TypeError, match="`df` must be a number"):
        F.StudentT(df=[3.0])
    with pytest.raises(ValueError, match="`min_df` must be a finite number >= 1"):
        F.StudentT(min_df=0.5)
    with pytest.raises(TypeError, match=r"`df_prior` must be a pair \(concentration, rate\)"):
        F.StudentT(df="global", df_prior=2.0)
    with pytest.raises(ValueError, match="`df_prior rate` must be a finite number > 0"):
        F.StudentT(df="global", df_prior=(2.0, 0.0))
    with pytest.raises(ValueError, match="`min_scale` must be a finite number >= 0"):
        F.Laplace(min_scale=-1.0)
    with pytest.raises(ValueError, match="`min_concentration` must be a finite number >= 0"):
        F.Gamma(min_concentration=float("nan"))
    with pytest.raises(ValueError, match="`min_concentration`"):
        F.Beta(min_concentration=-1)
    with pytest.raises(ValueError, match="`min_concentration`"):
        F.NegativeBinomial(min_concentration=-1)
    with pytest.raises(ValueError, match="`min_scale`"):
        F.LogNormal(min_scale=-1)
    with pytest.raises(ValueError, match="`covariance` must be 'full' or 'diagonal'"):
        F.MultivariateNormal(covariance="banded")
    with pytest.raises(ValueError, match="at least 2 for a MultivariateNormal"):
        F.MultivariateNormal(num_outputs=1)
    with pytest.raises(TypeError, match="`num_outputs` must be an integer or None"):
        F.MultivariateNormal(num_outputs=2.0)


# --------------------------------------------------------------------------- support checks
@pytest.fixture(scope="module")
def inputs():
    return np.linspace(-1, 1, 40)[:, None]


def _positive(n=40):
    return np.linspace(0.5, 3.0, n)


@pytest.mark.parametrize("family, y, message", [
    ("gamma", np.r_[_positive()[:3], -1.0, _positive()[4:17], 0.0, _positive()[18:]],
     r"`y` must be > 0 for the Gamma family; rows \[3, 17\] are not\."),
    ("lognormal", np.r_[-2.0, _positive()[1:]],
     r"`y` must be > 0 for the LogNormal family; rows \[0\] are not"),
    ("gamma", np.r_[1e-50, _positive()[1:]], r"rows \[0\] are not.*float32"),
    ("beta", np.r_[0.5 * np.ones(5), 1.0, 0.5 * np.ones(30), -0.1, 0.2, 0.3, 1.2],
     r"`y` must lie strictly between 0 and 1 for the Beta family; rows \[5, 36, 39\]"),
    ("beta", np.r_[0.99999999, 0.5 * np.ones(39)], r"rows \[0\] are not.*np\.clip"),
    ("poisson", np.r_[np.arange(10.0), 2.5, np.arange(29.0)],
     r"`y` must hold non-negative integers \(counts\) for the Poisson family; rows \[10\]"),
    ("poisson", np.r_[-1.0, np.arange(39.0)], r"Poisson family; rows \[0\] are not"),
    ("negative_binomial", np.r_[np.arange(39.0), 0.1],
     r"NegativeBinomial family; rows \[39\] are not\. Round"),
    ("mvn", np.zeros(40), r"needs D >= 2 outputs; `y` has shape \(40, 1\)\. Use family='normal'"),
    (F.MultivariateNormal(num_outputs=3), np.zeros((40, 2)),
     r"`y` has 2 output column\(s\) but this MultivariateNormal family was declared with "
     r"num_outputs=3"),
])
def test_bad_targets_are_rejected_before_fitting(inputs, family, y, message):
    model = bm.MDN(num_components=2, hidden_sizes=(3,), family=family)
    with pytest.raises(ValueError, match=message):
        model.fit(inputs, y, key=jax.random.key(0), num_steps=1)


def test_bad_held_out_targets_are_rejected(inputs):
    model = bm.MDN(num_components=2, hidden_sizes=(3,), family="poisson")
    y = np.arange(40.0)
    with pytest.raises(ValueError, match=r"`y_test` must hold non-negative integers .*rows \[1\]"):
        model.fit(inputs, y, key=jax.random.key(0), num_steps=1, X_test=inputs[:3],
                  y_test=np.array([1.0, 0.5, 2.0]))


def test_long_lists_of_bad_rows_are_abbreviated(inputs):
    model = bm.MDN(num_components=2, hidden_sizes=(3,), family="gamma")
    with pytest.raises(ValueError, match=r"rows \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, \.\.\.\] "
                                         r"\(40 rows\)"):
        model.fit(inputs, -np.ones(40), key=jax.random.key(0), num_steps=1)


def test_families_that_keep_y_unscaled_report_original_units(inputs):
    """No standardisation: identity standardizer, zero log-Jacobian; with a location-scale
    family, the log-Jacobian is -sum(log sd(y))."""
    from bayes_mdn.inference import prepare_data

    y = np.linspace(1.0, 50.0, 40)
    for name in ("lognormal", "gamma", "beta", "poisson", "negative_binomial"):
        target = y / 51.0 if name == "beta" else np.round(y)
        data = prepare_data(bm.MDN(family=name), inputs, target)
        assert data.standardizer.log_jacobian == 0.0
        np.testing.assert_array_equal(np.asarray(data.y)[:, 0], target.astype(np.float32))
    data = prepare_data(bm.MDN(family="studentt"), inputs, y)
    assert data.standardizer.log_jacobian == pytest.approx(-np.log(y.std()))

