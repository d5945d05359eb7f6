"""bayes_mdn.sklearn.MDNRegressor: scikit-learn's estimator checks, Pipeline with
ColumnTransformer, GridSearchCV / cross_val_score by log score, clone, pickling, shapes, and
every error (before anything is compiled)."""

from __future__ import annotations

import importlib
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
pd = pytest.importorskip("pandas")

from _compilation import no_compilation  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.compose import make_column_transformer  # noqa: E402
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import bayes_mdn as bm  # noqa: E402
from bayes_mdn.sklearn import MDNRegressor, log_score_scorer  # noqa: E402

UCI_YACHT = Path(__file__).resolve().parents[2] / "shared" / "data" / "uci" / "yacht"

#: Small and quick: each estimator check fits a model, and compilation is the cost.
FAST = dict(num_components=2, hidden_sizes=(4,), method="map", num_steps=20)

#: Checks that fit nothing (parameters, cloning, repr): run on every test run.
NO_FIT_CHECKS = {
    "check_estimator_cloneable", "check_estimator_repr", "check_no_attributes_set_in_init",
    "check_get_params_invariance", "check_set_params", "check_parameters_default_constructible",
    "check_do_not_raise_errors_in_init_or_set_params", "check_estimators_unfitted",
    "check_valid_tag_types", "check_estimator_tags_renamed", "check_mixin_order",
    "check_estimator_sparse_tag",
}

#: Every check passes; none needs an exemption. (scikit-learn skips its array-API check
#: unless SCIPY_ARRAY_API is set; JAX arrays are not an array-API namespace it supports.)
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


def _name(check) -> str:
    return getattr(check, "func", check).__name__


def _checks(fitting: bool):
    """parametrize_with_checks, restricted to the checks that fit or to those that do not."""
    marks = parametrize_with_checks([MDNRegressor(**FAST)],
                                    expected_failed_checks=lambda e: EXPECTED_FAILED_CHECKS)
    params = [param for param in marks.args[1]  # tuples, or pytest.param for an xfail
              if (_name(getattr(param, "values", param)[1]) not in NO_FIT_CHECKS) == fitting]
    return pytest.mark.parametrize(marks.args[0], params, ids=marks.kwargs.get("ids"))


@_checks(fitting=False)
def test_sklearn_checks_without_fitting(estimator, check):
    check(estimator)


@pytest.mark.slow  # ~45 fits of distinct shapes: several minutes of compilation
@_checks(fitting=True)
def test_sklearn_checks_that_fit(estimator, check):
    check(estimator)


# --------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    y = X[:, 0] + 0.5 * np.sin(3 * X[:, 1]) + 0.1 * rng.normal(size=80)
    return X, y


@pytest.fixture(scope="module")
def fitted(data):
    X, y = data
    return MDNRegressor(**FAST).fit(X, y)


# --------------------------------------------------------------------------- behaviour
def test_fit_keeps_the_posterior_and_predicts_1d(fitted, data):
    X, y = data
    assert isinstance(fitted.posterior_, bm.Posterior)
    assert fitted.posterior_.method == "map" and fitted.n_features_in_ == 3
    assert fitted.n_outputs_ == 1
    assert fitted.predict(X).shape == (80,)
    assert fitted.predict_quantiles(X, [0.1, 0.5, 0.9]).shape == (80, 3)
    interval = fitted.predict_interval(X, 0.8)
    assert interval.shape == (80, 2) and np.all(interval[:, 0] < interval[:, 1])
    pred = fitted.predict_dist(X)
    assert isinstance(pred, bm.PredictiveMixture)
    np.testing.assert_allclose(fitted.predict(X), pred.mean()[:, 0])
    np.testing.assert_allclose(fitted.predict_quantiles(X, [0.5])[:, 0],
                               pred.quantiles(0.5)[0, :, 0])
    assert fitted.score(X, y) == pytest.approx(np.mean(pred.log_prob(y)))
    assert log_score_scorer(fitted, X, y) == fitted.score(X, y)


def test_point_median_and_mode(fitted, data):
    X, _ = data
    median = clone(fitted).set_params(point="median").fit(*data)
    np.testing.assert_allclose(median.predict(X), fitted.predict_dist(X).quantiles(0.5)[0, :, 0],
                               rtol=1e-6)
    mode = clone(fitted).set_params(point="mode").fit(*data)
    modes = fitted.predict_dist(X[:5]).modes()
    np.testing.assert_allclose(mode.predict(X[:5]), [m[0, 0] for m in modes], rtol=1e-6)


def test_two_outputs_give_2d_predictions(data):
    X, y = data
    Y = np.stack([y, -y + 0.1 * X[:, 2]], axis=1)
    model = MDNRegressor(**FAST).fit(X, Y)
    assert model.n_outputs_ == 2
    assert model.predict(X).shape == (80, 2)
    assert model.predict_quantiles(X, [0.2, 0.8]).shape == (80, 2, 2)
    assert model.predict_interval(X).shape == (80, 2, 2)
    column = MDNRegressor(**FAST).fit(X, y[:, None])  # (N, 1) y: (N, 1) predictions
    assert column.predict(X).shape == (80, 1)
    with pytest.raises(ValueError, match="point='mode' needs one output"):
        clone(model).set_params(point="mode").fit(X, Y).predict(X)


def test_clone_round_trips_and_refits_identically(fitted, data):
    X, y = data
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    assert not hasattr(copy, "posterior_")
    np.testing.assert_array_equal(copy.fit(X, y).predict(X), fitted.predict(X))


def test_pickle_round_trip(fitted, data):
    X, _ = data
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.predict(X), fitted.predict(X))
    assert again.get_params() == fitted.get_params()


def test_pandas_names_and_column_transformer_pipeline(data):
    X, y = data
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    frame["colour"] = np.where(X[:, 2] > 0, "red", "blue")
    model = MDNRegressor(**FAST).fit(frame[["a", "b", "c"]], y)
    np.testing.assert_array_equal(model.feature_names_in_, ["a", "b", "c"])
    pipeline = make_pipeline(
        make_column_transformer((OneHotEncoder(), ["colour"]), remainder="passthrough"),
        MDNRegressor(**FAST))
    pipeline.fit(frame, y)
    assert pipeline.predict(frame).shape == (80,)
    assert np.isfinite(pipeline.score(frame, y))
    assert log_score_scorer(pipeline, frame, y) == pipeline.score(frame, y)
    scores = cross_val_score(pipeline, frame, y, cv=KFold(2))
    assert scores.shape == (2,) and np.all(np.isfinite(scores))


@pytest.mark.slow  # nine fits; a few seconds idle, minutes on a loaded machine
def test_grid_search_picks_by_log_score(data):
    X, y = data
    search = GridSearchCV(MDNRegressor(**FAST), {"num_components": [1, 2],
                                                 "prior_scale": [0.5, 2.0]},
                          cv=KFold(2), scoring=log_score_scorer)
    search.fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert search.best_score_ == pytest.approx(np.max(scores))
    assert search.best_params_ == search.cv_results_["params"][int(np.argmax(scores))]
    # By hand: the mean log predictive density of the best setting on the first fold.
    train, test = next(KFold(2).split(X))
    best = MDNRegressor(**{**FAST, **search.best_params_}).fit(X[train], y[train])
    assert search.cv_results_["split0_test_score"][search.best_index_] == pytest.approx(
        np.mean(best.predict_dist(X[test]).log_prob(y[test])), rel=1e-6)


@pytest.mark.slow  # twelve ensemble fits of a UCI table
def test_grid_search_on_uci_yacht():
    if not UCI_YACHT.is_dir():
        pytest.skip(f"UCI yacht data not found at {UCI_YACHT}")
    X, y, _, _ = bm.datasets.load_uci(UCI_YACHT, 0)
    search = GridSearchCV(
        MDNRegressor(hidden_sizes=(50,), activation="relu", num_members=3, num_steps=500),
        {"num_components": [1, 3, 5], "prior_scale": [0.3, 1.0]}, cv=KFold(2))
    search.fit(X, y[:, 0])
    assert search.best_score_ == pytest.approx(np.max(search.cv_results_["mean_test_score"]))


def test_prior_options(data):
    X, y = data
    model = MDNRegressor(**FAST, prior="hierarchical", prior_scale=0.7).fit(X, y)
    assert model.posterior_.model.prior.default == bm.priors.Hierarchical(scale=0.7)
    model = MDNRegressor(**FAST, prior_scale=0.5)._build_model()
    assert model.prior.default == bm.priors.FanInNormal(scale=0.5)
    model = MDNRegressor(**FAST, prior=bm.priors.Normal(2.0))._build_model()
    assert model.prior.default == bm.priors.Normal(2.0)


# --------------------------------------------------------------------------- errors
def test_bad_input_fails_before_compilation(data):
    X, y = data
    frame = pd.DataFrame({"a": X[:, 0], "colour": np.where(X[:, 1] > 0, "red", "blue")})
    nan_X = X.copy()
    nan_X[3, 1] = np.nan
    with no_compilation():
        with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
            MDNRegressor(**FAST).fit(X[:, 0], y)
        with pytest.raises(ValueError, match=r"non-numeric columns \['colour'\].*OneHotEncoder"):
            MDNRegressor(**FAST).fit(frame, y)
        with pytest.raises(ValueError, match="holds strings"):
            MDNRegressor(**FAST).fit(np.array([["a", "b"], ["c", "d"]]), [0.0, 1.0])
        with pytest.raises(ValueError, match="Input X contains NaN"):
            MDNRegressor(**FAST).fit(nan_X, y)
        with pytest.raises(ValueError, match="Input y contains NaN"):
            MDNRegressor(**FAST).fit(X, np.where(np.arange(80) == 5, np.nan, y))


@pytest.mark.parametrize(("params", "error", "match"), [
    ({"point": "mid"}, ValueError, "`point` must be one of"),
    ({"prior": bm.priors.Normal(1.0), "prior_scale": 1.0}, ValueError, "applies to prior=None"),
    ({"prior": "gaussian"}, ValueError, "Unknown prior name 'gaussian'"),
    ({"prior": "flat", "prior_scale": 1.0}, ValueError, "Unknown prior name 'flat'"),
    ({"fit_options": [1]}, TypeError, "`fit_options` must be a dict"),
    ({"fit_options": {"bogus": 1}}, TypeError, "unknown options"),
    ({"random_state": "seed"}, TypeError, "`random_state` must be an int"),
    ({"num_components": 0}, ValueError, "num_components"),
    ({"method": "magic"}, ValueError, "magic"),
])
def test_bad_parameters_fail_in_fit(data, params, error, match):
    X, y = data
    estimator = MDNRegressor(**{**FAST, **params})  # __init__ never validates
    with no_compilation(), pytest.raises(error, match=match):
        estimator.fit(X, y)


def test_interval_coverage_must_be_a_probability(fitted, data):
    with pytest.raises(ValueError, match="`coverage` must be a number strictly between"):
        fitted.predict_interval(data[0], 1.5)


def test_import_error_names_the_extra(monkeypatch):
    for name in [name for name in sys.modules if name.split(".")[0] == "sklearn"]:
        monkeypatch.setitem(sys.modules, name, None)  # None: "not installed" to the importer
    monkeypatch.delitem(sys.modules, "bayes_mdn.sklearn")
    with pytest.raises(ImportError, match=r'pip install "bayes-mdn\[sklearn\]"'):
        importlib.import_module("bayes_mdn.sklearn")
