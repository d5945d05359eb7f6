"""Every user-facing error message, driven through the public API (``bm.MDN``, ``fit``,
``Posterior.predictive`` and the ``PredictiveMixture`` queries).

Fits are tiny (N = 50, one hidden layer of 4 units, K = 2, a handful of steps) and share one
model, so the jit cache compiles the MAP program once for the whole module.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import bayes_mdn as bm
from bayes_mdn.priors import FanInNormal, Normal

N = 50
NUM_STEPS = 5


def _key() -> jax.Array:
    return jax.random.key(0)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, 1))
    y = np.sin(2.0 * X[:, 0]) + 0.1 * rng.normal(size=N)
    return X, y


@pytest.fixture(scope="module")
def model() -> bm.MDN:
    return bm.MDN(num_components=2, hidden_sizes=(4,))


@pytest.fixture(scope="module")
def posterior(model, data) -> bm.Posterior:
    X, y = data
    return model.fit(X, y, key=_key(), num_steps=NUM_STEPS)


@pytest.fixture(scope="module")
def predictive(posterior, data) -> bm.PredictiveMixture:
    X, _ = data
    return posterior.predictive(X[:3])


def _fit(model, X, y, **options):
    options.setdefault("key", _key())
    options.setdefault("num_steps", NUM_STEPS)
    return model.fit(X, y, **options)


# --------------------------------------------------------------------------- sanity
def test_fixture_fit_is_valid(posterior, predictive):
    assert posterior.method == "map"
    assert predictive.log_prob(np.zeros(3)).shape == (3,)


# --------------------------------------------------------------------------- non-finite data
def test_nan_and_inf_in_X_report_counts_and_rows(model, data):
    X, y = data
    X = X.copy()
    X[3, 0] = np.nan
    X[7, 0] = np.inf
    with pytest.raises(
        ValueError,
        match=r"`X` contains 1 NaN and 1 infinite values in 2 rows \(rows 3, 7\)\. "
        r"Drop or impute those rows before fitting\.",
    ):
        _fit(model, X, y)


def test_nan_in_y_reports_count_and_row(model, data):
    X, y = data
    y = y.copy()
    y[10] = np.nan
    with pytest.raises(ValueError, match=r"`y` contains 1 NaN and 0 infinite values in 1 rows "
                                         r"\(rows 10\)"):
        _fit(model, X, y)


def test_negative_inf_in_y_counts_as_infinite(model, data):
    X, y = data
    y = y.copy()
    y[[0, 1]] = -np.inf
    with pytest.raises(ValueError, match=r"`y` contains 0 NaN and 2 infinite values in 2 rows "
                                         r"\(rows 0, 1\)"):
        _fit(model, X, y)


def test_many_bad_rows_are_elided(model, data):
    X, y = data
    X = X.copy()
    X[:7, 0] = np.nan
    with pytest.raises(ValueError, match=r"`X` contains 7 NaN and 0 infinite values in 7 rows "
                                         r"\(rows 0, 1, 2, 3, 4, \.\.\.\)"):
        _fit(model, X, y)


def test_nan_rows_counted_once_per_row_with_several_columns(model):
    X = np.zeros((N, 3))
    X[5, :] = np.nan  # three values, one row
    with pytest.raises(ValueError, match=r"`X` contains 3 NaN and 0 infinite values in 1 rows "
                                         r"\(rows 5\)"):
        _fit(model, X, np.zeros(N))


def test_nan_at_predict_time(posterior):
    X = np.array([[0.0], [np.nan]])
    with pytest.raises(ValueError, match=r"`X` contains 1 NaN and 0 infinite values in 1 rows "
                                         r"\(rows 1\)"):
        posterior.predictive(X)


def test_nan_in_log_prob_targets(predictive):
    with pytest.raises(ValueError, match=r"`y` contains 1 NaN .* \(rows 2\)"):
        predictive.log_prob(np.array([0.0, 1.0, np.nan]))


def test_nan_in_held_out_data_names_the_argument(model, data):
    X, y = data
    X_test = X[:5].copy()
    X_test[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"`X_test` contains 1 NaN"):
        _fit(model, X, y, X_test=X_test, y_test=y[:5])


# --------------------------------------------------------------------------- shapes
def test_one_dimensional_X_hints_reshape(model, data):
    X, y = data
    with pytest.raises(
        ValueError,
        match=r"`X` must be a 2-D array of shape \(N, P\); got shape \(50,\)\. "
        r"Use X\.reshape\(-1, 1\) for a single feature\.",
    ):
        _fit(model, X[:, 0], y)


def test_three_dimensional_X_has_no_reshape_hint(model, data):
    X, y = data
    with pytest.raises(ValueError, match=r"`X` must be a 2-D array of shape \(N, P\); got shape "
                                         r"\(50, 1, 1\)\.$"):
        _fit(model, X[:, :, None], y)


def test_scalar_X_is_rejected(model):
    with pytest.raises(ValueError, match=r"`X` must be a 2-D array of shape \(N, P\); got shape "
                                         r"\(\)"):
        _fit(model, 1.0, [1.0])


def test_three_dimensional_y(model, data):
    X, y = data
    with pytest.raises(
        ValueError,
        match=r"`y` must have shape \(N,\) or \(N, D\); got shape \(50, 1, 1\)\. "
        r"Reshape it with y\.reshape\(len\(y\), -1\)\.",
    ):
        _fit(model, X, y[:, None, None])


def test_mismatched_rows(model, data):
    X, y = data
    with pytest.raises(ValueError, match=r"`X` and `y` must have the same number of rows; got "
                                         r"50 and 49\."):
        _fit(model, X, y[:-1])


def test_empty_X(model):
    with pytest.raises(ValueError, match=r"`X` has no rows \(shape \(0, 1\)\); pass at least "
                                         r"one row\."):
        _fit(model, np.zeros((0, 1)), np.zeros(0))


def test_empty_y(model, data):
    X, _ = data
    with pytest.raises(ValueError, match=r"`y` has no rows \(shape \(0, 1\)\)"):
        _fit(model, X, np.zeros(0))


def test_X_without_columns(model):
    with pytest.raises(ValueError, match=r"`X` has no columns \(shape \(50, 0\)\)"):
        _fit(model, np.zeros((N, 0)), np.zeros(N))


def test_y_without_columns(model, data):
    X, _ = data
    with pytest.raises(ValueError, match=r"`y` has no output columns \(shape \(50, 0\)\)"):
        _fit(model, X, np.zeros((N, 0)))


# --------------------------------------------------------------------------- dtypes
def test_string_array(model, data):
    _, y = data
    X = np.array([["a"]] * N)
    with pytest.raises(TypeError, match=r"`X` must hold numbers; got an array of dtype <U1\. "
                                        r"Convert it with np\.asarray"):
        _fit(model, X, y)


def test_string_targets(model, data):
    X, _ = data
    with pytest.raises(TypeError, match=r"`y` must hold numbers; got an array of dtype <U"):
        _fit(model, X, [str(v) for v in range(N)])


def test_object_array(model, data):
    X, y = data
    with pytest.raises(TypeError, match=r"`X` must hold numbers; got an array of dtype object"):
        _fit(model, X.astype(object), y)


def test_bytes_array(model, data):
    _, y = data
    with pytest.raises(TypeError, match=r"`X` must hold numbers; got an array of dtype \|S1"):
        _fit(model, np.array([[b"a"]] * N), y)


def test_ragged_list(model):
    with pytest.raises(TypeError, match=r"`X` could not be converted to a numeric array .*"
                                        r"Pass a NumPy or JAX array of floats\."):
        _fit(model, [[1.0, 2.0], [3.0]], [1.0, 2.0])


def test_complex_array(model, data):
    X, y = data
    with pytest.raises(TypeError, match=r"`X` must be real-valued; got complex dtype complex128\. "
                                        r"Pass the real part"):
        _fit(model, X.astype(complex), y)


def test_complex_targets(model, data):
    X, y = data
    with pytest.raises(TypeError, match=r"`y` must be real-valued; got complex dtype complex64"):
        _fit(model, X, y.astype(np.complex64))


def test_datetime_array(model, data):
    _, y = data
    X = np.array([["2020-01-01"]] * N, dtype="datetime64[D]")
    with pytest.raises(TypeError, match=r"`X` must be a numeric array; got dtype datetime64"):
        _fit(model, X, y)


def test_integer_and_bool_inputs_are_accepted(posterior):
    as_int = posterior.predictive(np.array([[0], [1]])).mean()
    as_float = posterior.predictive(np.array([[0.0], [1.0]])).mean()
    as_bool = posterior.predictive(np.array([[False], [True]])).mean()
    np.testing.assert_array_equal(as_int, as_float)
    np.testing.assert_array_equal(as_bool, as_float)


# --------------------------------------------------------------------------- keys
@pytest.mark.parametrize("value", [0, 7, np.int64(3)])
def test_int_key_in_fit(model, data, value):
    X, y = data
    with pytest.raises(TypeError, match=rf"`key` must be a JAX PRNG key, not the integer "
                                        rf".*; pass jax\.random\.key\({int(value)}\)\."):
        model.fit(X, y, key=value, num_steps=NUM_STEPS)


def test_missing_key_in_fit(model, data):
    X, y = data
    with pytest.raises(TypeError, match=r"`key` is required: pass a JAX PRNG key such as "
                                        r"jax\.random\.key\(0\)\."):
        model.fit(X, y, key=None, num_steps=NUM_STEPS)


def test_key_must_be_keyword_only(model, data):
    X, y = data
    with pytest.raises(TypeError):
        model.fit(X, y, _key())  # type: ignore[misc]


def test_non_key_object(model, data):
    X, y = data
    with pytest.raises(TypeError, match=r"`key` must be a JAX PRNG key such as "
                                        r"jax\.random\.key\(0\); got float\."):
        model.fit(X, y, key=0.5, num_steps=NUM_STEPS)


def test_batch_of_keys(model, data):
    X, y = data
    keys = jax.random.split(_key(), 2)
    with pytest.raises(ValueError, match=r"`key` must be a single PRNG key; got a batch of shape "
                                         r"\(2,\)\. Pass one key, e.g\. keys\[0\]\."):
        model.fit(X, y, key=keys, num_steps=NUM_STEPS)


def test_int_key_in_sample(predictive):
    with pytest.raises(TypeError, match=r"pass jax\.random\.key\(0\)"):
        predictive.sample(0, num_samples=2)


def test_int_key_in_inverse_sine():
    with pytest.raises(TypeError, match=r"pass jax\.random\.key\(0\)"):
        bm.datasets.inverse_sine(0, num_samples=100)


# --------------------------------------------------------------------------- model spec
@pytest.mark.parametrize("value", [0, -1])
def test_num_components_below_one(value):
    with pytest.raises(ValueError, match=rf"`num_components` must be at least 1; got {value}\."):
        bm.MDN(num_components=value)


@pytest.mark.parametrize("value", [2.0, "2", True, None])
def test_num_components_not_an_int(value):
    with pytest.raises(TypeError, match=r"`num_components` must be an integer; got "):
        bm.MDN(num_components=value)


def test_num_components_numpy_int_is_normalised():
    model = bm.MDN(num_components=np.int64(3), hidden_sizes=[4])
    assert model.num_components == 3 and type(model.num_components) is int
    assert model.hidden_sizes == (4,)


def test_hidden_sizes_not_a_sequence():
    with pytest.raises(TypeError, match=r"`hidden_sizes` must be a sequence of layer widths such "
                                        r"as \(15, 15\); got 4\."):
        bm.MDN(hidden_sizes=4)


@pytest.mark.parametrize("sizes", [(0,), (4, -2)])
def test_hidden_sizes_non_positive(sizes):
    with pytest.raises(ValueError, match=r"`hidden_sizes entries` must be at least 1"):
        bm.MDN(hidden_sizes=sizes)


def test_hidden_sizes_non_integer():
    with pytest.raises(TypeError, match=r"`hidden_sizes entries` must be an integer; got 4\.5"):
        bm.MDN(hidden_sizes=(4.5,))


def test_unknown_activation():
    with pytest.raises(ValueError, match=r"Unknown activation 'swish'; choose one of "
                                         r"\[.*'relu', .*'tanh'\]\."):
        bm.MDN(activation="swish")


def test_activation_not_a_string():
    with pytest.raises(TypeError, match=r"`activation` must be a string; got None\."):
        bm.MDN(activation=None)


def test_activation_is_case_insensitive():
    assert bm.MDN(activation="TanH").activation == "tanh"


def test_unknown_family():
    with pytest.raises(ValueError, match=r"Unknown family 'bogus'; choose one of "
                                         r"\[.*'normal'.*\]\."):
        bm.MDN(family="bogus")


def test_family_wrong_type():
    with pytest.raises(TypeError, match=r"`family` must be a family name such as 'normal' or an "
                                        r"instance like bayes_mdn\.families\.Normal\(\); got int"):
        bm.MDN(family=3)


def test_family_bad_min_scale():
    with pytest.raises(ValueError, match=r"`min_scale` must be a finite number >= 0; got -1"):
        bm.families.Normal(min_scale=-1.0)


def test_family_bad_fixed_scale():
    with pytest.raises(ValueError, match=r"`fixed_scale` must be a finite positive number or "
                                         r"None; got 0\.0"):
        bm.families.Normal(fixed_scale=0.0)


def test_prior_wrong_type():
    with pytest.raises(TypeError, match=r"`prior` must be a bayes_mdn\.priors\.Prior, a dict of "
                                        r"site names to priors, or a callable .*; got int\."):
        bm.MDN(prior=3)


def test_prior_dict_with_non_prior_value():
    with pytest.raises(TypeError, match=r"Prior dict value for 'loc' must be a "
                                        r"bayes_mdn\.priors\.Prior such as priors\.Normal\(1\.0\); "
                                        r"got float\."):
        bm.MDN(prior={"loc": 1.0})


def test_prior_dict_with_non_string_key():
    with pytest.raises(TypeError, match=r"Prior dict keys must be site names \(str\); got 0\."):
        bm.MDN(prior={0: Normal(1.0)})


def test_prior_dict_key_matching_no_site_is_rejected_at_fit(data):
    X, y = data
    model = bm.MDN(num_components=2, hidden_sizes=(4,),
                   prior={"hiden_0.kernel": Normal(1.0), "default": FanInNormal()})
    with pytest.raises(ValueError, match=r"Prior keys \['hiden_0\.kernel'\] match no parameter "
                                         r"site; valid keys are .*'hidden_0\.kernel'"):
        model.fit(X, y, key=_key(), num_steps=1)


# --------------------------------------------------------------------------- fit options
def test_unknown_method(model, data):
    X, y = data
    with pytest.raises(ValueError, match=r"Unknown method 'bogus'; choose one of \[.*'map'.*\]\."):
        _fit(model, X, y, method="bogus")


def test_method_not_a_string(model, data):
    X, y = data
    with pytest.raises(TypeError, match=r"`method` must be a string, one of \[.*'map'.*\]; "
                                        r"got 1\."):
        _fit(model, X, y, method=1)


def test_method_is_case_insensitive(model, data, posterior):
    X, y = data
    upper = _fit(model, X, y, method="MAP")
    assert upper.method == "map"
    for name, value in posterior.draws.items():
        np.testing.assert_array_equal(upper.draws[name], value)


def test_unknown_fit_option(model, data):
    X, y = data
    # The list of valid options grows with the method; check the ones that must be there.
    with pytest.raises(TypeError, match=r"fit\(method='map'\) got unknown options "
                                        r"\['num_step', 'verbose'\]; valid options are "
                                        r"\[.*'learning_rate', .*'num_steps', .*\]\.$"):
        model.fit(X, y, key=_key(), num_step=5, verbose=True)


@pytest.mark.parametrize("value", [0, -3])
def test_num_steps_non_positive(model, data, value):
    X, y = data
    with pytest.raises(ValueError, match=rf"`num_steps` must be at least 1; got {value}\."):
        _fit(model, X, y, num_steps=value)


@pytest.mark.parametrize("value", [2.5, "10", True])
def test_num_steps_not_an_int(model, data, value):
    X, y = data
    with pytest.raises(TypeError, match=r"`num_steps` must be an integer; got "):
        _fit(model, X, y, num_steps=value)


@pytest.mark.parametrize("value", [0.0, -0.1, float("nan"), float("inf")])
def test_learning_rate_bad_value(model, data, value):
    X, y = data
    with pytest.raises(ValueError, match=r"`learning_rate` must be a finite positive number; "
                                         r"got "):
        _fit(model, X, y, learning_rate=value)


@pytest.mark.parametrize("value", ["0.01", None, True])
def test_learning_rate_bad_type(model, data, value):
    X, y = data
    with pytest.raises(TypeError, match=r"`learning_rate` must be a number; got "):
        _fit(model, X, y, learning_rate=value)


def test_num_evaluations_zero(model, data):
    X, y = data
    with pytest.raises(ValueError, match=r"`num_evaluations` must be at least 1; got 0\."):
        _fit(model, X, y, num_evaluations=0)


def test_progress_not_bool(model, data):
    X, y = data
    with pytest.raises(TypeError, match=r"`progress` must be True, False or None \(automatic: "
                                        r"on in a terminal\); got 'yes'\."):
        _fit(model, X, y, progress="yes")


def test_fit_rejects_non_model(data):
    X, y = data
    from bayes_mdn.inference import fit

    with pytest.raises(TypeError, match=r"`model` must be a bayes_mdn\.MDN; got dict\."):
        fit({}, X, y, key=_key())


# --------------------------------------------------------------------------- held-out data
def test_X_test_without_y_test(model, data):
    X, y = data
    with pytest.raises(ValueError, match=r"Pass both `X_test` and `y_test` to record held-out "
                                         r"log-likelihood\."):
        _fit(model, X, y, X_test=X[:5])


def test_y_test_without_X_test(model, data):
    X, y = data
    with pytest.raises(ValueError, match=r"Pass both `X_test` and `y_test`"):
        _fit(model, X, y, y_test=y[:5])


def test_X_test_wrong_number_of_features(model, data):
    X, y = data
    with pytest.raises(ValueError, match=r"`X_test` has 2 features but the model was fitted with "
                                         r"1; pass an array of shape \(M, 1\)\."):
        _fit(model, X, y, X_test=np.zeros((5, 2)), y_test=y[:5])


def test_y_test_wrong_number_of_outputs(model, data):
    X, y = data
    with pytest.raises(ValueError, match=r"`y_test` has 2 output columns but the model has 1; "
                                         r"pass an array of shape \(M, 1\)\."):
        _fit(model, X, y, X_test=X[:5], y_test=np.zeros((5, 2)))


def test_held_out_mismatched_rows(model, data):
    X, y = data
    with pytest.raises(ValueError, match=r"`X_test` and `y_test` must have the same number of "
                                         r"rows; got 5 and 4\."):
        _fit(model, X, y, X_test=X[:5], y_test=y[:4])


# --------------------------------------------------------------------------- prediction
def test_predict_wrong_number_of_features(posterior):
    with pytest.raises(ValueError, match=r"`X` has 2 features but the model was fitted with 1; "
                                         r"pass an array of shape \(M, 1\)\."):
        posterior.predictive(np.zeros((3, 2)))


def test_predict_one_dimensional_X(posterior):
    with pytest.raises(ValueError, match=r"got shape \(3,\)\. Use X\.reshape\(-1, 1\)"):
        posterior.predictive(np.zeros(3))


def test_predict_max_elements(posterior):
    with pytest.raises(ValueError, match=r"`max_elements` must be at least 1; got 0\."):
        posterior.predictive(np.zeros((3, 1)), max_elements=0)


@pytest.mark.parametrize("q", [0.0, 1.0, -0.1, 1.5, [0.5, 1.0], float("nan")])
def test_quantiles_outside_unit_interval(predictive, q):
    with pytest.raises(ValueError, match=r"`q` must lie strictly between 0 and 1; got "):
        predictive.quantiles(q)


@pytest.mark.parametrize("q", [[[0.5]], []])
def test_quantiles_bad_shape(predictive, q):
    with pytest.raises(ValueError, match=r"`q` must be a scalar or a 1-D array of "
                                         r"probabilities; got "):
        predictive.quantiles(q)


def test_quantiles_num_iterations(predictive):
    with pytest.raises(ValueError, match=r"`num_iterations` must be at least 1; got 0\."):
        predictive.quantiles(0.5, num_iterations=0)


def test_log_prob_wrong_number_of_rows(predictive):
    with pytest.raises(ValueError, match=r"`y` must have one row per input \(3\); got 4 rows\."):
        predictive.log_prob(np.zeros(4))


def test_cdf_wrong_number_of_outputs(predictive):
    with pytest.raises(ValueError, match=r"`y` has 2 output columns but the model has 1; pass an "
                                         r"array of shape \(M, 1\)\."):
        predictive.cdf(np.zeros((3, 2)))


def test_sample_num_samples(predictive):
    with pytest.raises(ValueError, match=r"`num_samples` must be at least 1; got 0\."):
        predictive.sample(_key(), num_samples=0)


def test_modes_grid_size(predictive):
    with pytest.raises(ValueError, match=r"`grid_size` must be at least 3; got 2\."):
        predictive.modes(grid_size=2)


# --------------------------------------------------------------------------- pandas
def test_pandas_input_is_accepted(model, data, posterior):
    pd = pytest.importorskip("pandas")
    X, y = data
    frame = pd.DataFrame({"x": X[:, 0]})
    series = pd.Series(y, name="y")
    from_pandas = model.fit(frame, series, key=_key(), num_steps=NUM_STEPS)
    # Same numbers, same key: the fit is bit-identical to the NumPy one.
    for name, value in posterior.draws.items():
        np.testing.assert_array_equal(from_pandas.draws[name], value)
    np.testing.assert_array_equal(
        posterior.predictive(frame.iloc[:4]).log_prob(series.iloc[:4]),
        posterior.predictive(X[:4]).log_prob(y[:4]),
    )


def test_pandas_non_numeric_column_is_rejected(model, data):
    pd = pytest.importorskip("pandas")
    X, y = data
    frame = pd.DataFrame({"x": X[:, 0], "label": ["a"] * N})
    with pytest.raises(TypeError, match=r"`X` must hold numbers; got an array of dtype object"):
        model.fit(frame, y, key=_key(), num_steps=NUM_STEPS)


# --------------------------------------------------------------------------- too few rows
@pytest.mark.parametrize("num_rows", [1])
def test_fit_needs_at_least_two_rows(model, num_rows):
    with pytest.raises(ValueError, match=r"`X` has 1 row; fitting needs at least 2 rows \(the "
                                         r"data are standardised with their mean and spread\)\."):
        _fit(model, np.zeros((num_rows, 1)), np.zeros(num_rows))


def test_two_rows_are_enough(model):
    posterior = _fit(model, np.array([[0.0], [1.0]]), np.array([0.0, 1.0]))
    assert np.all(np.isfinite(posterior.predictive(np.array([[0.5]])).log_prob([0.5])))


# --------------------------------------------------------------------------- method options
@pytest.mark.parametrize(
    ("method", "options", "error", "message"),
    [
        ("nuts", {"num_samples": 0}, ValueError, r"`num_samples` must be at least 1; got 0\."),
        ("nuts", {"num_chains": 0}, ValueError, r"`num_chains` must be at least 1; got 0\."),
        ("nuts", {"num_chains": -2}, ValueError, r"`num_chains` must be at least 1; got -2\."),
        ("nuts", {"num_warmup": -1}, ValueError, r"`num_warmup` must be at least 0; got -1\."),
        ("nuts", {"num_warmup": 1.5}, TypeError, r"`num_warmup` must be an integer; got 1\.5"),
        ("nuts", {"max_tree_depth": 0}, ValueError, r"`max_tree_depth` must be at least 1"),
        ("nuts", {"thinning": 0}, ValueError, r"`thinning` must be at least 1; got 0\."),
        ("nuts", {"target_accept_prob": 1.0}, ValueError,
         r"`target_accept_prob` must be strictly between 0 and 1; got 1\.0\."),
        ("nuts", {"chain_method": "threads"}, ValueError,
         r"Unknown chain_method 'threads'; choose one of \['auto', 'vectorized', 'parallel', "
         r"'sequential'\]\."),
        ("nuts", {"dense_mass": "yes"}, TypeError, r"`dense_mass` must be True or False"),
        ("svi", {"guide": "bogus"}, ValueError,
         r"Unknown guide 'bogus'; choose one of \['normal', 'lowrank', 'mvn', 'flow'\]\."),
        ("svi", {"guide": None}, TypeError, r"`guide` must be a string, one of \["),
        ("svi", {"num_draws": 0}, ValueError, r"`num_draws` must be at least 1; got 0\."),
        ("svi", {"num_particles": 0}, ValueError, r"`num_particles` must be at least 1"),
        ("svi", {"subsample_size": 0}, ValueError, r"`subsample_size` must be at least 1"),
        ("svi", {"rank": -1}, ValueError, r"`rank` must be at least 1; got -1\."),
        ("svi", {"num_flows": 0}, ValueError, r"`num_flows` must be at least 1; got 0\."),
        ("svi", {"num_eval_draws": 0}, ValueError, r"`num_eval_draws` must be at least 1"),
        ("svi", {"init_scale": 0.0}, ValueError,
         r"`init_scale` must be a finite positive number; got 0\.0\."),
        ("svi", {"init_scale": -1.0}, ValueError, r"`init_scale` must be a finite positive"),
        ("ensemble", {"num_members": 0}, ValueError, r"`num_members` must be at least 1"),
        ("laplace", {"num_draws": -5}, ValueError, r"`num_draws` must be at least 1; got -5\."),
        ("laplace", {"hessian": "diag"}, ValueError,
         r"Unknown hessian 'diag'; choose one of \['exact', 'fisher', 'empirical_fisher'\]\."),
        ("laplace", {"predictive": "exact"}, ValueError,
         r"Unknown predictive 'exact'; choose one of \['linearised', 'sampled'\]\."),
        ("laplace", {"subspace": "data"}, ValueError,
         r"Unknown subspace 'data'; choose one of \['well_determined', 'full'\]\."),
        ("map", {"lr_schedule": "linear"}, ValueError,
         r"`lr_schedule` must be one of \['constant', 'cosine'\] or an optax schedule"),
        ("map", {"ema_decay": 1.0}, ValueError, r"`ema_decay` must be in \[0, 1\); got 1\.0\."),
        ("map", {"ema_decay": "0.9"}, TypeError, r"`ema_decay` must be a number in \[0, 1\)"),
        ("svi", {"num_members": 3}, TypeError, r"fit\(method='svi'\) got unknown options "
                                               r"\['num_members'\]"),
    ],
)
def test_bad_method_options(model, data, method, options, error, message):
    X, y = data
    with pytest.raises(error, match=message):
        model.fit(X, y, key=_key(), method=method, **options)


def test_prior_given_as_a_name():
    with pytest.raises(TypeError, match=r"`prior` must be a bayes_mdn\.priors\.Prior, a dict of "
                                        r"site names to priors, or a callable .*; got str\."):
        bm.MDN(prior="laplace")


def test_int_key_in_plot_predictive_samples(posterior):
    from bayes_mdn import plotting

    with pytest.raises(TypeError, match=r"`key` must be a JAX PRNG key, not the integer 3; "
                                        r"pass jax\.random\.key\(3\)\."):
        plotting.plot_predictive_samples(posterior, np.zeros((2, 1)), key=3)


# --------------------------------------------------------------------------- column names
@pytest.fixture(scope="module")
def frame_fit(data):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"height": rng.normal(size=N), "width": rng.normal(size=N)})
    y = pd.Series(X["height"] - X["width"] + 0.1 * rng.normal(size=N), name="area")
    model = bm.MDN(num_components=2, hidden_sizes=(4,))
    return model.fit(X, y, key=_key(), num_steps=NUM_STEPS), X, y


def test_pandas_column_names_are_recorded(frame_fit):
    posterior, _, _ = frame_fit
    assert posterior.info["feature_names"] == ["height", "width"]
    assert posterior.info["target_names"] == ["area"]


def test_pandas_target_frame_names_are_recorded(data):
    pd = pytest.importorskip("pandas")
    X, y = data
    posterior = bm.MDN(num_components=2, hidden_sizes=(4,)).fit(
        X, pd.DataFrame({"first": y}), key=_key(), num_steps=NUM_STEPS)
    assert posterior.info["target_names"] == ["first"]
    assert "feature_names" not in posterior.info  # a plain array has no names


def test_column_names_survive_save_and_load(frame_fit, tmp_path):
    posterior, _, _ = frame_fit
    posterior.save(tmp_path / "fit.bmdn")
    loaded = bm.load(tmp_path / "fit.bmdn")
    assert loaded.info["feature_names"] == ["height", "width"]
    assert loaded.info["target_names"] == ["area"]


def test_predict_with_reordered_columns_is_refused(frame_fit):
    posterior, X, _ = frame_fit
    with pytest.raises(ValueError, match=r"`X` has columns \['width', 'height'\] but the model "
                                         r"was fitted on columns \['height', 'width'\]\. "
                                         r"Reorder them with X\[\['height', 'width'\]\]\."):
        posterior.predictive(X[["width", "height"]])


def test_predict_with_other_columns_is_refused(frame_fit):
    posterior, X, _ = frame_fit
    renamed = X.rename(columns={"width": "depth"})
    with pytest.raises(ValueError, match=r"`X` has columns \['height', 'depth'\] but the model "
                                         r"was fitted on columns \['height', 'width'\]\.$"):
        posterior.predictive(renamed)


def test_predict_with_same_columns_or_plain_array(frame_fit):
    posterior, X, y = frame_fit
    by_frame = posterior.predictive(X.iloc[:5]).log_prob(y.iloc[:5])
    by_array = posterior.predictive(X.to_numpy()[:5]).log_prob(y.to_numpy()[:5])
    np.testing.assert_array_equal(by_frame, by_array)


def test_held_out_frame_with_other_columns_is_refused(frame_fit):
    _, X, y = frame_fit
    model = bm.MDN(num_components=2, hidden_sizes=(4,))
    with pytest.raises(ValueError, match=r"`X_test` has columns \['width', 'height'\] but the "
                                         r"model was fitted on columns"):
        model.fit(X, y, key=_key(), num_steps=NUM_STEPS, X_test=X[["width", "height"]],
                  y_test=y)


def test_plots_are_labelled_with_column_names(frame_fit):
    pd = pytest.importorskip("pandas")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bayes_mdn import plotting

    _, X, y = frame_fit
    one = X[["height"]]
    posterior = bm.MDN(num_components=2, hidden_sizes=(4,)).fit(one, y, key=_key(),
                                                                 num_steps=NUM_STEPS)
    try:
        ax = plotting.plot_conditional_density(posterior, x_range=(-2, 2), y_range=(-3, 3),
                                               resolution=(8, 8))
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("height", "area")
        ax = plotting.plot_predictive_samples(posterior, pd.DataFrame({"height": [0.0, 1.0]}),
                                              key=_key())
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("height", "sampled area")
    finally:
        plt.close("all")
