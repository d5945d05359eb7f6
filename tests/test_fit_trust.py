"""Fits a user can trust: validation-driven stopping (best iterate restored, per member for
ensembles), the not-converged warning, DataWarning on suspicious data, the validation
options' errors, progress bars and the NUTS tree-depth warning."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

import bayes_mdn as bm
from bayes_mdn._validation import warn_about_data
from bayes_mdn.inference._holdout import split_validation

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MODEL = bm.MDN(num_components=2, hidden_sizes=(8,))


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(80, 1))
    return X, np.sin(2.0 * X[:, 0]) + 0.3 * rng.normal(size=80)


def _data_warnings(X, y, **kwargs) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_about_data(X, y, discrete_family=kwargs.pop("discrete_family", False), **kwargs)
    return [str(w.message) for w in caught if issubclass(w.category, bm.DataWarning)]


# --------------------------------------------------------------------------- validation
@pytest.fixture(scope="module")
def map_validated(data) -> bm.Posterior:
    X, y = data
    # Overfits quickly: a wide network, no weight decay to speak of, a large step.
    model = bm.MDN(num_components=3, hidden_sizes=(40,), prior=bm.priors.FanInNormal(10.0))
    return model.fit(X, y, key=jax.random.key(0), num_steps=3000, num_evaluations=150,
                     learning_rate=0.03, validation=0.25, patience=5, refit=False), model


def test_map_validation_stops_early_and_keeps_the_best_iterate(data, map_validated):
    posterior, _ = map_validated
    history = posterior.history
    stopped, best = int(history["stopped_step"]), int(history["best_step"])
    assert stopped < 3000  # stopped on the validation rows, not the budget
    assert best < stopped
    curve, steps = history["validation_log_likelihood"], history["eval_step"]
    assert curve.shape == steps.shape
    assert steps[-1] == stopped
    # `patience` evaluations after the best, none better.
    assert stopped - best == 5 * 20
    assert curve[steps == best][0] == pytest.approx(curve.max())
    # The returned parameters are the best iterate: their log-likelihood on the validation
    # rows (the same rows: chosen with the fit's key) is the curve's best value.
    X, y = data
    _, _, (X_val, y_val) = split_validation(X, y, 0.25, jax.random.key(0))
    assert X_val.shape[0] == posterior.info["num_validation_rows"] == 20
    score = float(np.mean(posterior.predictive(X_val).log_prob(y_val)))
    assert score == pytest.approx(curve.max(), abs=1e-4)
    # The model never trained on the validation rows.
    assert posterior.info["num_rows"] == 60


def test_validation_rows_are_disjoint_from_training_rows(data):
    X, y = data
    X_train, _, (X_val, _) = split_validation(X, y, 0.25, jax.random.key(0))
    rows = {float(v) for v in X[:, 0]}
    assert {float(v) for v in X_train[:, 0]}.isdisjoint({float(v) for v in X_val[:, 0]})
    assert {float(v) for v in X_train[:, 0]} | {float(v) for v in X_val[:, 0]} == rows
    _, _, (X_other, _) = split_validation(X, y, 0.25, jax.random.key(1))
    assert not np.array_equal(np.sort(X_val[:, 0]), np.sort(X_other[:, 0]))


def test_ensemble_keeps_each_members_best(data):
    X, y = data
    rng = np.random.default_rng(1)
    X_val = rng.uniform(-2, 2, size=(30, 1))
    y_val = np.sin(2.0 * X_val[:, 0]) + 0.3 * rng.normal(size=30)
    model = bm.MDN(num_components=3, hidden_sizes=(40,), prior=bm.priors.FanInNormal(10.0))
    posterior = model.fit(X, y, key=jax.random.key(2), method="ensemble", num_members=3,
                          num_steps=3000, num_evaluations=150, learning_rate=0.03,
                          validation=(X_val, y_val), patience=4)
    history = posterior.history
    best = history["best_step"]
    members = history["member_validation_log_likelihood"]
    assert best.shape == (3,) and members.shape == (3, history["eval_step"].size)
    assert history["validation_log_likelihood"].shape == history["eval_step"].shape
    assert int(history["stopped_step"]) < 3000
    # Every member stopped: its last `patience` evaluations were no better than its best.
    assert np.all(int(history["stopped_step"]) - best >= 4 * 20)
    for member in range(3):
        draws = {name: value[:, member:member + 1] for name, value in posterior.draws.items()}
        one = dataclasses.replace(posterior, draws=draws)
        score = float(np.mean(one.predictive(X_val).log_prob(y_val)))
        at_best = members[member][history["eval_step"] == best[member]][0]
        assert score == pytest.approx(at_best, abs=1e-4)
        assert at_best == pytest.approx(members[member][history["eval_step"] <= best[member]
                                                        ].max())


def test_svi_validation(data):
    X, y = data
    posterior = MODEL.fit(X, y, key=jax.random.key(0), method="svi", num_steps=200,
                          num_evaluations=10, validation=0.2, patience=2, num_draws=8,
                          num_eval_draws=4)
    history = posterior.history
    assert {"validation_log_likelihood", "best_step", "stopped_step"} <= set(history)
    assert int(history["best_step"]) <= int(history["stopped_step"]) <= 200
    assert np.isfinite(history["validation_log_likelihood"]).all()


def test_validation_checkpoint_resume_equals_the_uninterrupted_run(data, tmp_path,
                                                                   monkeypatch):
    from bayes_mdn.inference._checkpoint import CheckpointPlan

    X, y = data
    model = bm.MDN(num_components=3, hidden_sizes=(40,), prior=bm.priors.FanInNormal(10.0))
    options = dict(num_steps=3000, num_evaluations=150, learning_rate=0.03, validation=0.25,
                   patience=5)
    full = model.fit(X, y, key=jax.random.key(0), **options)
    path = tmp_path / "v.ckpt"
    original, calls = CheckpointPlan.write, []

    class Crash(Exception):
        pass

    def write(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            raise Crash

    monkeypatch.setattr(CheckpointPlan, "write", write)
    with pytest.raises(Crash):
        model.fit(X, y, key=jax.random.key(0), checkpoint=path, checkpoint_every=70,
                  **options)
    monkeypatch.undo()
    resumed = model.fit(X, y, key=jax.random.key(0), checkpoint=path, checkpoint_every=70,
                        resume=path, **options)
    for name, value in full.draws.items():
        np.testing.assert_array_equal(np.asarray(resumed.draws[name]), np.asarray(value))
    assert int(resumed.history["stopped_step"]) == int(full.history["stopped_step"])
    assert int(resumed.history["best_step"]) == int(full.history["best_step"])
    # Resuming the finished (stopped) run returns it without training further.
    again = model.fit(X, y, key=jax.random.key(0), checkpoint=path, checkpoint_every=70,
                      resume=path, **options)
    for name, value in full.draws.items():
        np.testing.assert_array_equal(np.asarray(again.draws[name]), np.asarray(value))


# --------------------------------------------------------------------------- not converged
def test_too_short_budget_warns_not_converged():
    X, y, _, _ = bm.datasets.inverse_sine(jax.random.key(0), num_samples=600,
                                          train_fraction=0.5)
    model = bm.MDN(num_components=5, hidden_sizes=(15, 15))
    with pytest.warns(bm.ConvergenceWarning, match=r"still improving at the end of its 300 "
                      r"steps.*validation=0\.2"):
        model.fit(X, y, key=jax.random.key(0), num_steps=300, learning_rate=0.003)


def test_converged_fit_does_not_warn():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 1))
    y = 2.0 * X[:, 0] + 0.5 * rng.normal(size=200)
    model = bm.MDN(num_components=1, hidden_sizes=())
    with warnings.catch_warnings():
        warnings.simplefilter("error", bm.ConvergenceWarning)
        posterior = model.fit(X, y, key=jax.random.key(0), num_steps=2000)
    assert posterior.history["loss"].size == 2000


def test_validation_budget_too_short_warns(data):
    X, y = data
    with pytest.warns(bm.ConvergenceWarning, match=r"validation log-likelihood was still "
                      r"improving at the last of the num_steps=40 steps"):
        MODEL.fit(X, y, key=jax.random.key(0), num_steps=40, num_evaluations=4,
                  learning_rate=0.001, validation=0.2)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("options", "error", "message"), [
    ({"validation": 1.0}, ValueError, r"`validation` as a fraction of the training rows must "
                                      r"be in \(0, 1\), e\.g\. 0\.2; got 1\.0"),
    ({"validation": 0.0}, ValueError, r"must be in \(0, 1\)"),
    ({"validation": -0.2}, ValueError, r"must be in \(0, 1\)"),
    ({"validation": True}, TypeError, r"`validation` must be a fraction .* got bool"),
    ({"validation": "0.2"}, TypeError, r"`validation` must be a fraction .* got str"),
    ({"validation": (1, 2, 3)}, ValueError, r"or a pair \(X_val, y_val\); got a sequence of "
                                            r"3 items"),
    ({"validation": 0.2, "patience": 0}, ValueError, r"patience"),
    ({"validation": 0.2, "patience": 2.5}, TypeError, r"patience"),
    ({"progress": "yes"}, TypeError, r"`progress` must be True, False or None"),
])
@pytest.mark.parametrize("method", ["map", "ensemble", "svi"])
def test_bad_validation_options(data, method, options, error, message):
    X, y = data
    with pytest.raises(error, match=message):
        MODEL.fit(X, y, key=jax.random.key(0), method=method, **options)


@pytest.mark.parametrize(("validation", "error", "message"), [
    (lambda X, y: (X[:10, 0], y[:10]), ValueError, r"`X_val` must be a 2-D array"),
    (lambda X, y: (np.hstack([X[:10], X[:10]]), y[:10]), ValueError,
     r"`X_val` has 2 features but the model was fitted with 1"),
    (lambda X, y: (X[:10], y[:9]), ValueError, r"X_val.*y_val|y_val.*X_val"),
    (lambda X, y: (np.where(np.arange(10)[:, None] == 3, np.nan, X[:10]), y[:10]), ValueError,
     r"`X_val` contains 1 NaN"),
    (lambda X, y: (X[:10], np.full(10, np.inf)), ValueError, r"`y_val` contains 0 NaN and 10 "
                                                             r"infinite"),
])
def test_bad_validation_rows(data, validation, error, message):
    X, y = data
    with pytest.raises(error, match=message):
        MODEL.fit(X, y, key=jax.random.key(0), validation=validation(X, y))


def test_validation_fraction_leaving_too_few_rows():
    X = np.arange(6.0)[:, None]
    with pytest.raises(ValueError, match=r"`validation=0\.1` of 6 rows leaves 1 validation and "
                                         r"5 training rows"):
        MODEL.fit(X, np.sin(X[:, 0]), key=jax.random.key(0), validation=0.1)


def test_bad_input_fails_before_compilation(data, monkeypatch):
    """The checks run before anything is compiled: no block kernel is ever built."""
    from bayes_mdn.inference import _optim

    def refuse(*args, **kwargs):
        raise AssertionError("compiled before the input was checked")

    monkeypatch.setattr(_optim, "build_program", refuse)
    X, y = data
    with pytest.raises(ValueError, match="X_val"):
        bm.MDN(num_components=4).fit(X, y, key=jax.random.key(0),
                                     validation=(X[:5, 0], y[:5]))


# --------------------------------------------------------------------------- DataWarning
def test_integer_targets_warn():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    y = rng.integers(0, 6, size=300).astype(float)  # 6 levels
    (message,) = _data_warnings(X, y)
    assert "6 integer values" in message and "not comparable" in message
    assert "negative_binomial" in message and "dequantise" in message
    assert _data_warnings(X, y, discrete_family=True) == []


def test_few_valued_non_integer_targets_warn():
    rng = np.random.default_rng(0)
    y = rng.choice([0.5, 1.25, 2.0], size=100)
    (message,) = _data_warnings(rng.normal(size=(100, 1)), y)
    assert "3 distinct values" in message


def test_sentinel_column_warns():
    rng = np.random.default_rng(0)
    X = rng.normal(22.0, 1.5, size=(500, 3))
    X[rng.choice(500, 40, replace=False), 1] = 99.0
    y = rng.normal(size=500)
    (message,) = _data_warnings(X, y, feature_names=["u", "g", "r"])
    assert "column 1 ('g'): 99 on 40 rows" in message and "sentinels" in message
    # In y too, e.g. -999 for "not measured".
    y[:10] = -999.0
    found = _data_warnings(X[:, [0]], y)
    assert len(found) == 1 and "`y`" in found[0] and "-999 on 10 rows" in found[0]


def test_sentinel_needs_more_than_a_few_rows_and_a_far_value():
    rng = np.random.default_rng(0)
    X = rng.normal(22.0, 1.5, size=(500, 1))
    X[:3, 0] = 99.0  # 3 rows: "a few", not flagged
    assert _data_warnings(X, rng.normal(size=500)) == []
    X = rng.normal(22.0, 1.5, size=(500, 1))
    X[:40, 0] = 27.0  # repeated, but within 10 robust standard deviations
    assert _data_warnings(X, rng.normal(size=500)) == []


def test_constant_column_warns():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=50), np.full(50, 3.0)])
    (message,) = _data_warnings(X, rng.normal(size=50))
    assert "constant columns (column 1)" in message


def test_data_warnings_come_from_fit_before_compilation(monkeypatch):
    from bayes_mdn.inference import _optim

    def refuse(*args, **kwargs):
        raise AssertionError("compiled")

    monkeypatch.setattr(_optim, "build_program", refuse)
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=100), np.ones(100)])
    y = rng.integers(0, 6, size=100).astype(float)
    original = (X.copy(), y.copy())
    with pytest.warns(bm.DataWarning) as record, \
            pytest.raises(ValueError, match="X_test"):
        bm.MDN().fit(X, y, key=jax.random.key(0), X_test=X[:, :1], y_test=y)
    messages = [str(w.message) for w in record if issubclass(w.category, bm.DataWarning)]
    assert len(messages) == 2  # one per kind of problem, each once
    assert any("integer values" in m for m in messages)
    assert any("constant columns" in m for m in messages)
    np.testing.assert_array_equal(X, original[0])  # the data is never altered
    np.testing.assert_array_equal(y, original[1])


def test_no_data_warning_on_the_seed_data():
    X, y, _, _ = bm.datasets.inverse_sine(jax.random.key(0), num_samples=40_000,
                                          train_fraction=0.1)
    assert _data_warnings(X, y) == []


@pytest.mark.parametrize("name", ["bostonHousing", "concrete", "energy", "yacht"])
def test_no_data_warning_on_the_uci_data(name):
    folder = SHARED / "uci" / name
    if not folder.is_dir():
        pytest.skip(f"UCI data not found at {folder}")
    for split in (0, 7, 19):
        X, y, _, _ = bm.datasets.load_uci(folder, split)
        assert _data_warnings(X, y) == [], (name, split)


def test_photoz_sentinels_warn_and_clean_rows_do_not():
    path = SHARED / "photoz" / "dc2_training.csv"
    if not path.is_file():
        pytest.skip(f"photo-z data not found at {path}")
    table = np.genfromtxt(path, delimiter=",", names=True)
    names = [n for n in table.dtype.names if n not in ("id", "redshift")]
    X = np.column_stack([table[n] for n in names])
    y = table["redshift"]
    (message,) = _data_warnings(X, y, feature_names=names)
    assert "('mag_u_lsst'): 99 on 714 rows" in message
    magnitudes = [i for i, n in enumerate(names) if not n.startswith("mag_err")]
    clean = (X[:, magnitudes] < 90).all(axis=1)
    assert _data_warnings(X[clean], y[clean]) == []


# --------------------------------------------------------------------------- progress
def test_progress_bar_replaces_the_stderr_lines(data, capsys):
    X, y = data
    MODEL.fit(X, y, key=jax.random.key(0), num_steps=40, num_evaluations=4, progress=True,
              validation=0.2)
    err = capsys.readouterr().err
    assert "map" in err and "40/40" in err and "val_ll" in err
    MODEL.fit(X, y, key=jax.random.key(0), num_steps=40, num_evaluations=4, progress=False)
    assert capsys.readouterr().err == ""


def test_progress_off_by_environment(data, capsys, monkeypatch):
    monkeypatch.setenv("BAYES_MDN_PROGRESS", "0")
    X, y = data
    MODEL.fit(X, y, key=jax.random.key(0), num_steps=40, num_evaluations=4)
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- NUTS
def test_nuts_warns_when_trees_hit_max_depth(data, capsys):
    X, y = data
    with pytest.warns(bm.ConvergenceWarning, match=r"of the NUTS transitions hit "
                      r"max_tree_depth=1 \(more than 10%\).*Start the chains from fitted "
                      r"networks.*raise max_tree_depth"):
        posterior = MODEL.fit(X, y, key=jax.random.key(0), method="nuts", num_chains=2,
                              num_warmup=20, num_samples=20, max_tree_depth=1, init=None,
                              progress=True)
    assert posterior.info["fraction_max_tree_depth"] > 0.1
    assert np.mean(posterior.sample_stats["tree_depth"] >= 1) == pytest.approx(
        posterior.info["fraction_max_tree_depth"])
    err = capsys.readouterr().err
    assert "nuts" in err and "40/40" in err and "max_depth" in err


def test_nuts_default_options():
    options = bm.inference.NutsOptions()
    assert (options.num_chains, options.num_warmup, options.num_samples,
            options.max_tree_depth, options.init) == (4, 300, 200, 6, "auto")
    with pytest.raises(ValueError, match=r"`init` must be a fitted Posterior, 'auto' or None"):
        bm.inference.NutsOptions(init="map")


def test_nuts_progress_bar_segments_give_the_same_draws(data):
    """With a bar the draws run in compiled segments; they are those of one run."""
    X, y = data
    options = dict(method="nuts", num_chains=2, num_warmup=10, num_samples=20,
                   max_tree_depth=3, init=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.ConvergenceWarning)  # max depth 3: may be hit
        plain = MODEL.fit(X, y, key=jax.random.key(3), progress=False, **options)
        shown = MODEL.fit(X, y, key=jax.random.key(3), progress=True, **options)
    for name, value in plain.draws.items():
        np.testing.assert_array_equal(np.asarray(shown.draws[name]), np.asarray(value))
