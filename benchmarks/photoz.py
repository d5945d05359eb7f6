"""Photo-z benchmark on the LSST DESC RAIL DC2 test set: bayes_mdn against the field's estimators.

Data: ``../shared/data/photoz`` beside the checkout (or ``--data``): 10 225 training and
20 449 validation galaxies with six LSST magnitudes (non-detections coded 99) and the true
redshift. Everything is fitted and tuned on the training file only (a fixed 20 % of its
rows, ``TUNE_FRACTION``, held out for tuning); the validation file is scored once.

Methods, all on the same split:

* bayes_mdn ``ensemble`` (deep ensemble of 5 MAP fits of an MDN with 10 Normal
  components, two hidden layers of 64 tanh units, ``FanInNormal(1.0)`` prior) and ``svi``
  (mean-field Gaussian variational posterior of the same MDN started from a MAP fit).
  Inputs: the i magnitude, the five adjacent colours and a u non-detection flag, after
  replacing each non-detection (and each fainter-than-the-limit magnitude) by a limiting
  magnitude per band, the 99th percentile of the training galaxies' detected magnitudes
  in that band (:func:`features`). Every fit sees the training galaxies plus
  ``AUGMENT_COPIES`` = 4 copies of them with each detected magnitude redrawn within its
  error (:func:`augment_rows`: noise augmentation, a regulariser that also teaches the
  network how far the photometry scatters; the validation galaxies are never augmented).
  Tuned on the training file (:func:`tune`, one MAP fit on the augmented 80 % of its rows,
  early-stopped on the other 20 %): the number of Adam steps (its best held-out
  log-likelihood) and the exponent ``a`` of ``bayes_mdn ensemble sharpened``.
  The recipe was chosen on the same split by ``benchmarks/photoz_sweep.py``
  (results/photoz_sweep.md, round 1: magnitude errors as inputs, 20 components and
  128-unit layers, five members, each < 0.5 % on the held-out CRPS;
  results/photoz_sweep_round2.md: the noise augmentation, -13 % CRPS and -21 % 0.15
  outliers for one MAP fit, where a log(1 + z) target, GELU, Student-t components and a
  tighter prior did not help).
* bayes_mdn ``ensemble sharpened`` (the recipe): that ensemble's p(z) raised to the tuned
  power ``a`` and renormalised on the grid (:func:`sharpen`, FlexZBoost's post-hoc
  sharpening; the training rows' noise copies widen p(z) a little); the mode is unchanged.
* bayes_mdn ``ensemble recalibrated``: the ensemble with its predictive recalibrated
  (:meth:`bayes_mdn.Posterior.recalibrate`, isotonic map of PIT values) by cross-fitting
  on the training rows (``cv=RECALIBRATION_FOLDS``: refits of the same recipe, noise copies
  included, each without one fold's galaxies); its fit seconds include the ensemble's.
* FlexZBoost (``pz-rail-flexzboost``: FlexCode with XGBoost; RAIL tunes its bump threshold
  and sharpening on its own held-out quarter of the training rows), kNN
  (``pz-rail-sklearn``'s ``KNearNeigh``, RAIL's own grid search) and pzflow
  (``pz-rail-pzflow``, a normalising flow), each through RAIL's Informer/Estimator classes
  with RAIL's defaults (their own non-detection handling: RAIL's LSST limiting magnitudes);
* NGBoost (``ngboost``, ``NGBRegressor`` with a Normal distribution) on the same inputs as
  bayes_mdn, its number of boosting rounds chosen by early stopping on the held-out rows.

Every method's p(z) is evaluated on RAIL's grid (0 to 3 by 0.01, normalised there) and
scored by the same code (on the validation galaxies with z <= 3: the two beyond the grid,
where no peer puts any density, are left out and counted),
:func:`bayes_mdn.metrics.photoz_report` (sigma_IQR, sigma_NMAD, median bias, outlier
rates with the RAIL rule and 0.15, log score with densities floored at 1e-4, CRPS, CDE
loss, PIT KS/CvM/AD) on the mode of p(z) as the point estimate; for
bayes_mdn the exact scores (log score, CRPS and PIT of the mixture itself) are recorded too.
``crps_core`` and ``crps_0.15_outliers`` split each method's CRPS between its galaxies
whose mode is within 0.15 (1 + z) of the truth and the others (:func:`crps_split`);
``outlier_rate_0.06`` is every method's outlier rate at one cut, the RAIL rule's floor
(:func:`common_cut_outliers`: the rule's own cut grows with each method's scatter).
Fit and predict seconds are wall-clock, one run, with the peers' process running beside
bayes_mdn's (so both share the machine; on a loaded machine they are orders of magnitude,
not ratios). The recorded peers ran first (``--run-peers``, FlexZBoost and kNN in one
folder, NGBoost in another, beside an earlier bayes_mdn run); the recorded bayes_mdn rows
merged those folders with ``--peers-from`` in two runs sharing one ``--workdir``
(``--methods ensemble``, then all: the second loaded the tuning and the ensemble).

pzflow is slow on CPUs (on a loaded 2-core machine its ``--quick`` run, 5 epochs and 3000
galaxies, took 539 s to fit and 297 s to predict); leave it out with ``--peers FlexZBoost
kNN NGBoost`` where that is too long.

The peers live in their own virtual environment, so their pins never touch bayes_mdn's::

    python3 -m venv /path/venv-photoz
    /path/venv-photoz/bin/pip install pz-rail-flexzboost pz-rail-sklearn pz-rail-pzflow ngboost

(versions used for the recorded results: pz-rail-base 2.0.11, pz-rail-flexzboost 2.0.3,
pz-rail-sklearn 2.0.3, pz-rail-pzflow 2.0.4, pzflow 4.0.0, ngboost 0.6.0, xgboost 3.2.0).
Then, from the repository root, with bayes_mdn's own environment active::

    PYTHONPATH=$PWD python benchmarks/photoz.py --peers-python /path/venv-photoz/bin/python
        [--quick]

runs each peer in a subprocess of that interpreter (``--run-peers``: this file, importing
neither JAX nor bayes_mdn), which writes each p(z) grid to a temporary folder; this
process fits bayes_mdn, scores everything and writes ``results/photoz.json`` and
``results/photoz.md`` (``photoz_quick.*`` with ``--quick``: 3000 validation galaxies,
shorter fits). Without ``--peers-python`` only bayes_mdn runs. ``--peers`` picks a subset.
The peers can also run on their own first, ``<peers python> benchmarks/photoz.py --run-peers
FOLDER``, and be merged with ``--peers-from FOLDER``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BANDS = "ugrizy"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "photoz"
GRID = np.linspace(0.0, 3.0, 301)  # RAIL's default zmin, zmax, nzbins
TUNE_FRACTION = 0.2
SEED = 0
#: Adam options of every bayes_mdn fit: a constant step size and Polyak averaging, so that
#: the held-out curve of the tuning fit is smooth enough to read the best step count off.
FIT_OPTIONS = {"learning_rate": 0.005, "ema_decay": 0.995}
PEERS = ("FlexZBoost", "kNN", "pzflow", "NGBoost")
OURS = ("ensemble", "ensemble recalibrated", "svi")
#: The recipe chosen on the training file (benchmarks/photoz_sweep.py): inputs with the
#: magnitude errors or not, ensemble members, recalibration folds.
USE_ERRORS = False
NUM_MEMBERS = 5
#: Noisy copies of every training galaxy added to the fits (:func:`augment_rows`).
AUGMENT_COPIES = 4
#: Candidate exponents of the post-hoc sharpening p(z)^a (:func:`sharpen`), tuned on the
#: held-out training rows.
SHARPEN_EXPONENTS = np.round(np.arange(0.8, 2.01, 0.05), 2)
RECALIBRATION_FOLDS = 2
#: Non-detections in at least this many training galaxies give a band a detection flag.
MIN_FLAGGED = 10


# --------------------------------------------------------------------------- data
def load(folder: Path):
    import pandas as pd

    train = pd.read_csv(folder / "dc2_training.csv")
    valid = pd.read_csv(folder / "dc2_validation.csv")
    return train, valid


def magnitudes(frame) -> np.ndarray:
    return frame[[f"mag_{band}_lsst" for band in BANDS]].to_numpy(np.float64)


def limiting_magnitudes(train) -> np.ndarray:
    """Per band, the 99th percentile of the training galaxies' detected magnitudes (6,)."""
    mags = magnitudes(train)
    return np.array([np.percentile(column[column < 90], 99) for column in mags.T])


def flagged_bands(train) -> list[int]:
    """Bands with at least ``MIN_FLAGGED`` non-detections among the training galaxies."""
    return [j for j, column in enumerate(magnitudes(train).T)
            if np.sum(column >= 90) >= MIN_FLAGGED]


def features(frame, limits: np.ndarray, flags: list[int], *, errors: bool = False
             ) -> np.ndarray:
    """(N, 6 + len(flags) [+ 6]): i magnitude, five colours, a non-detection flag per flagged
    band [, the log10 magnitude error per band].

    A non-detection (99) carries only "fainter than the survey can see": it is replaced by
    the band's limiting magnitude, and a magnitude fainter than the limit (noise-dominated)
    is set to the limit too; the flag keeps the information that the band was not detected.
    With ``errors``, each band's magnitude error enters as log10, clipped to [0.005, 1] mag
    (a non-detection's recorded error, a placeholder, is set to 1 mag: no information).
    """
    mags = magnitudes(frame)
    detected = mags < 90
    mags = np.where(detected, np.minimum(mags, limits), limits)
    colours = mags[:, :-1] - mags[:, 1:]
    columns = [mags[:, 3], colours, *[(~detected[:, j]).astype(np.float64) for j in flags]]
    if errors:
        errs = frame[[f"mag_err_{band}_lsst" for band in BANDS]].to_numpy(np.float64)
        errs = np.where(detected, np.clip(errs, 0.005, 1.0), 1.0)
        columns.append(np.log10(errs))
    return np.column_stack(columns)


def augment_rows(frame, copies: int, *, rng: np.random.Generator):
    """`frame` followed by `copies` copies of it in which every detected magnitude is
    redrawn as ``m + e * N(0, 1)`` with its own error ``e`` (non-detections, redshifts and
    errors kept): training-set noise augmentation, a recipe option (``copies=0`` returns
    `frame` itself)."""
    import pandas as pd

    if copies == 0:
        return frame
    pieces = [frame]
    for _ in range(copies):
        noisy = frame.copy()
        for band in BANDS:
            mag = noisy[f"mag_{band}_lsst"].to_numpy(np.float64)
            err = noisy[f"mag_err_{band}_lsst"].to_numpy(np.float64)
            detected = mag < 90
            draw = mag + np.where(detected, err, 0.0) * rng.standard_normal(mag.shape)
            noisy[f"mag_{band}_lsst"] = np.where(detected, draw, mag)
        pieces.append(noisy)
    return pd.concat(pieces, ignore_index=True)


def redshift_pdf(pred, target: str) -> np.ndarray:
    """Each galaxy's p(z) on ``GRID`` (N, 301) from a predictive of the fitted target:
    ``"z"`` itself, or ``"log1p"`` (``t = log(1 + z)``: ``p(z) = p_t(log(1 + z)) / (1 + z)``,
    the Jacobian of the transform)."""
    if target == "z":
        return np.exp(pred.log_prob_grid(GRID))
    if target == "log1p":
        return np.exp(pred.log_prob_grid(np.log1p(GRID)) - np.log1p(GRID))
    raise ValueError(f"target must be 'z' or 'log1p'; got {target!r}.")


def sharpen(pdf: np.ndarray, exponent: float) -> np.ndarray:
    """``pdf ** exponent`` renormalised on ``GRID`` (trapezoid rule), per galaxy: a post-hoc
    sharpening (exponent > 1) or flattening (< 1), as FlexZBoost's ``sharpen``."""
    powered = np.power(np.clip(pdf, 0.0, None), exponent)
    return powered / np.trapezoid(powered, GRID, axis=1)[:, None]


def tune_split(num_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed (fit, held-out) row indices of the training file."""
    order = np.random.default_rng(SEED).permutation(num_rows)
    num_held = round(TUNE_FRACTION * num_rows)
    return np.sort(order[num_held:]), np.sort(order[:num_held])


# --------------------------------------------------------------------------- peers (own venv)
def _rail_peer(name: str, train, valid, quick: bool):
    from rail.core.data import DataStore

    DataStore.allow_overwrite = True
    workdir = Path(tempfile.mkdtemp(prefix=f"photoz_{name}_"))
    columns = [c for c in train.columns if c.startswith("mag_")] + ["redshift"]
    train, valid = train[columns], valid[[c for c in columns if c != "redshift"]]
    if name == "pzflow":  # its estimator wants a redshift column, replaced by its grid
        valid = valid.assign(redshift=0.0)
    if name == "FlexZBoost":
        from rail.estimation.algos.flexzboost import FlexZBoostEstimator, FlexZBoostInformer

        informer_class, estimator_class = FlexZBoostInformer, FlexZBoostEstimator
        options = {"nbump": 5, "nsharp": 5} if quick else {}
    elif name == "kNN":
        from rail.estimation.algos.k_nearneigh import KNearNeighEstimator, KNearNeighInformer

        informer_class, estimator_class = KNearNeighInformer, KNearNeighEstimator
        options = {"ngrid_sigma": 4} if quick else {}
    else:
        from rail.estimation.algos.pzflow_nf import PZFlowEstimator, PZFlowInformer

        informer_class, estimator_class = PZFlowInformer, PZFlowEstimator
        options = {"n_training_epochs": 5} if quick else {}
    started = time.perf_counter()
    informer = informer_class.make_stage(name=f"inform_{name}", hdf5_groupname="",
                                         model=str(workdir / "model.pkl"), **options)
    informer.inform(train)
    fit_seconds = time.perf_counter() - started
    estimator = estimator_class.make_stage(name=f"estimate_{name}", hdf5_groupname="",
                                           model=informer.get_handle("model"),
                                           output=str(workdir / "pz.hdf5"))
    started = time.perf_counter()
    ensemble = estimator.estimate(valid).data
    pdf = ensemble.pdf(GRID)
    predict_seconds = time.perf_counter() - started
    return pdf, fit_seconds, predict_seconds, {"options": options}


def _ngboost_peer(train, valid, quick: bool):
    from ngboost import NGBRegressor
    from ngboost.distns import Normal

    limits, flags = limiting_magnitudes(train), flagged_bands(train)
    X, y = features(train, limits, flags), train["redshift"].to_numpy()
    X_valid = features(valid, limits, flags)
    fit_rows, held_rows = tune_split(len(X))
    max_rounds = 300 if quick else 1500
    started = time.perf_counter()
    tuner = NGBRegressor(Dist=Normal, n_estimators=max_rounds, random_state=SEED,
                         verbose=False)
    tuner.fit(X[fit_rows], y[fit_rows], X_val=X[held_rows], Y_val=y[held_rows],
              early_stopping_rounds=50)
    rounds = int(tuner.best_val_loss_itr or max_rounds) + 1
    model = NGBRegressor(Dist=Normal, n_estimators=rounds, random_state=SEED, verbose=False)
    model.fit(X, y)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    dist = model.pred_dist(X_valid)
    loc, scale = dist.params["loc"], dist.params["scale"]
    pdf = np.exp(-0.5 * np.square((GRID[None] - loc[:, None]) / scale[:, None])) / (
        scale[:, None] * np.sqrt(2 * np.pi))
    predict_seconds = time.perf_counter() - started
    return pdf, fit_seconds, predict_seconds, {"n_estimators": rounds}


def run_peers(names: list[str], data: Path, out: Path, quick: bool) -> None:
    """Fit each peer, write ``<name>.npy`` (pdf on GRID, float32) and ``peers.json``."""
    train, valid = load(data)
    valid = valid.iloc[validation_rows(len(valid), quick)]
    out.mkdir(parents=True, exist_ok=True)
    record = {}
    for name in names:
        print(f"[peers] {name} ...", file=sys.stderr, flush=True)
        try:
            if name == "NGBoost":
                pdf, fit_s, predict_s, info = _ngboost_peer(train, valid, quick)
            else:
                pdf, fit_s, predict_s, info = _rail_peer(name, train, valid, quick)
        except Exception as error:  # record and go on with the others
            record[name] = {"error": f"{type(error).__name__}: {error}"}
            print(f"[peers] {name} failed: {error}", file=sys.stderr, flush=True)
            continue
        pdf = np.asarray(pdf, np.float64)
        # qp's interpolated grids can dip below zero by round-off (FlexZBoost: -9e-16):
        # clipped, and how many and how far recorded.
        info["negative_densities_clipped"] = [int(np.sum(pdf < 0)), float(min(pdf.min(), 0))]
        info["non_finite_densities"] = int(np.sum(~np.isfinite(pdf)))
        np.save(out / f"{name}.npy", np.clip(pdf, 0.0, None).astype(np.float32))
        record[name] = {"fit_seconds": fit_s, "predict_seconds": predict_s, **info}
        print(f"[peers] {name}: fit {fit_s:.1f} s, predict {predict_s:.1f} s", file=sys.stderr,
              flush=True)
        _write_peers_json(out, record, done=False)
    _write_peers_json(out, record, done=True)


def _write_peers_json(out: Path, record: dict, *, done: bool) -> None:
    """``peers.json`` after each peer (``partial.json`` until the last), atomically."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("pz-rail-base", "pz-rail-flexzboost", "pz-rail-sklearn", "pz-rail-pzflow",
                    "pzflow", "ngboost", "xgboost", "qp-prob", "scikit-learn"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    target = out / ("peers.json" if done else "partial.json")
    temporary = target.with_suffix(".tmp")
    temporary.write_text(json.dumps({"peers": record, "versions": versions}, indent=2))
    temporary.replace(target)


def validation_rows(num_rows: int, quick: bool) -> np.ndarray:
    if not quick:
        return np.arange(num_rows)
    return np.sort(np.random.default_rng(SEED + 1).choice(num_rows, 3000, replace=False))


# --------------------------------------------------------------------------- bayes_mdn
def make_model(num_components: int, hidden: int):
    import bayes_mdn as bm

    return bm.MDN(num_components=num_components, hidden_sizes=(hidden, hidden),
                  activation="tanh", prior=bm.priors.FanInNormal(1.0))


def tune(model, train, limits, flags, key, max_steps: int, copies: int
         ) -> tuple[int, float, dict]:
    """Adam steps and sharpening exponent of the recipe, from one MAP fit on the fit rows
    of :func:`tune_split` (augmented as every fit is, ``AUGMENT_COPIES``), early-stopped on
    the held-out rows (never augmented; ``FIT_OPTIONS``: constant step size, Polyak
    averaging): the step of its best held-out log-likelihood, and the exponent of
    :func:`sharpen` (``SHARPEN_EXPONENTS``) with the lowest CRPS of its p(z) there."""
    import bayes_mdn as bm

    fit_rows, held_rows = tune_split(len(train))
    fit_frame = augment_rows(train.iloc[fit_rows], copies, rng=np.random.default_rng(SEED + 2))
    X_fit = features(fit_frame, limits, flags, errors=USE_ERRORS)
    X_held = features(train.iloc[held_rows], limits, flags, errors=USE_ERRORS)
    y_fit, z_held = fit_frame["redshift"].to_numpy(), train["redshift"].to_numpy()[held_rows]
    post = model.fit(X_fit, y_fit, key=key, method="map", num_steps=max_steps,
                     validation=(X_held, z_held), refit=False, num_evaluations=40,
                     patience=8, **FIT_OPTIONS)
    pdf = np.exp(post.predictive(X_held).log_prob_grid(GRID))
    crps = [float(np.mean(bm.metrics.gridded_crps(sharpen(pdf, a), GRID, z_held)))
            for a in SHARPEN_EXPONENTS]
    best = int(np.argmin(crps))
    record = {"validation_curve": [[int(s), float(v)] for s, v in zip(
                  post.history["eval_step"],
                  np.ravel(post.history["validation_log_likelihood"]), strict=False)],
              "sharpen_crps": [[float(a), c] for a, c in zip(SHARPEN_EXPONENTS, crps,
                                                             strict=True)]}
    return int(post.history["best_step"]), float(SHARPEN_EXPONENTS[best]), record


def run_bayes_mdn(train, valid, quick: bool, workdir: Path,
                  methods: tuple[str, ...] = OURS) -> dict:
    """Tune, fit the ensemble and the SVI recipes, and predict the validation galaxies.

    Each fitted posterior is saved in `workdir` (with its timings); a later run given the
    same `workdir` loads it instead of fitting again. `methods`: which of ``OURS`` to fit
    (``"ensemble sharpened"`` comes with ``"ensemble"``).
    """
    import jax

    import bayes_mdn as bm

    limits, flags = limiting_magnitudes(train), flagged_bands(train)
    # Every fit sees the training rows plus AUGMENT_COPIES noisy copies of them (one draw,
    # fixed seed; one copy in the quick mode); the validation galaxies are never augmented.
    copies = 1 if quick else AUGMENT_COPIES
    frame = augment_rows(train, copies, rng=np.random.default_rng(SEED + 3))
    X = features(frame, limits, flags, errors=USE_ERRORS)
    y = frame["redshift"].to_numpy()
    X_valid = features(valid, limits, flags, errors=USE_ERRORS)
    key_tune, key_fit, key_svi = jax.random.split(jax.random.key(SEED), 3)
    key_recalibrate = jax.random.fold_in(key_fit, 1)
    num_components, hidden = 10, 64
    num_members = 3 if quick else NUM_MEMBERS
    max_steps = 600 if quick else 4000
    model = make_model(num_components, hidden)
    workdir.mkdir(parents=True, exist_ok=True)
    settings_file = workdir / "settings.json"
    if settings_file.exists():
        settings = json.loads(settings_file.read_text())
    else:
        started = time.perf_counter()
        steps, exponent, record = tune(model, train, limits, flags, key_tune, max_steps,
                                        copies)
        settings = {
            "features": "i, u-g, g-r, r-i, i-z, z-y, non-detection flags "
                        f"{[BANDS[j] for j in flags]}"
                        + (", log10 magnitude errors" if USE_ERRORS else ""),
            "augment_copies": copies,
            "recalibration": f"isotonic, cv={RECALIBRATION_FOLDS} (refits of the ensemble "
                             "on the augmented training rows of the other fold)",
            "limits": limits.tolist(), "num_components": num_components,
            "hidden_sizes": [hidden, hidden], "activation": "tanh",
            "prior": "FanInNormal(1.0)", "num_members": num_members,
            "fit_options": FIT_OPTIONS, "max_steps": max_steps, "num_steps": steps,
            "sharpen": exponent, **record, "tune_seconds": time.perf_counter() - started}
        settings_file.write_text(json.dumps(settings, indent=2))
    steps, exponent = settings["num_steps"], settings["sharpen"]
    print(f"[bayes_mdn] tuned steps {steps}, sharpening {exponent} "
          f"({settings['tune_seconds']:.0f} s)", file=sys.stderr, flush=True)

    def ensemble_fit():
        return model.fit(X, y, key=key_fit, method="ensemble", num_members=num_members,
                         num_steps=steps, **FIT_OPTIONS)

    # SVI: a mean-field Gaussian posterior over every weight, started from a MAP fit (its
    # own key, the tuned step count), then at most 800 SVI steps (the guide's centre starts
    # at the optimum; the steps mostly fit its scales). On the augmented rows too, so its
    # likelihood counts each galaxy 1 + AUGMENT_COPIES times (a tempered posterior).
    def svi_fit():
        start = model.fit(X, y, key=key_svi, method="map", num_steps=steps, **FIT_OPTIONS)
        return model.fit(X, y, key=key_svi, method="svi", guide="normal", init=start,
                         num_steps=min(steps, 800), num_draws=32 if quick else 64)

    # The ensemble recalibrated (isotonic map of its PIT values) by cross-fitting on the
    # training rows: refits of the same recipe (augmentation included), each without one
    # fold, so no noisy copy of a galaxy is fitted when its PIT value is taken; its fit
    # seconds are the ensemble's plus the recalibration's.
    X_plain = features(train, limits, flags, errors=USE_ERRORS)
    row_of = {row.tobytes(): i for i, row in enumerate(X_plain)}
    if len(row_of) != len(X_plain):  # refit_fold finds each fold's galaxies by their inputs
        raise ValueError("two training galaxies have identical inputs; refit_fold needs "
                         "them distinct")

    def refit_fold(X_fold, y_fold, *, key):
        rows = np.array([row_of[row.tobytes()] for row in np.asarray(X_fold, np.float64)])
        fold = augment_rows(train.iloc[rows], copies, rng=np.random.default_rng(SEED + 4))
        return model.fit(features(fold, limits, flags, errors=USE_ERRORS),
                         fold["redshift"].to_numpy(), key=key, method="ensemble",
                         num_members=num_members, num_steps=steps, **FIT_OPTIONS)

    def recalibrated_fit():
        return out["ensemble"]["post"].recalibrate(
            X_plain, train["redshift"].to_numpy(), cv=RECALIBRATION_FOLDS,
            key=key_recalibrate, refit=refit_fold)

    out = {"settings": settings}
    for name, fit in (("ensemble", ensemble_fit), ("ensemble recalibrated", recalibrated_fit),
                      ("svi", svi_fit)):
        if name not in methods:
            continue
        stem = name.replace(" ", "_")
        saved, timing_file = workdir / f"{stem}.bmdn", workdir / f"{stem}.json"
        if saved.exists() and timing_file.exists():
            post, fit_seconds = bm.load(saved), json.loads(timing_file.read_text())["fit"]
        else:
            started = time.perf_counter()
            post = fit()
            fit_seconds = time.perf_counter() - started
            if name == "ensemble recalibrated":
                fit_seconds += out["ensemble"]["fit_seconds"]
            post.save(saved)
            timing_file.write_text(json.dumps({"fit": fit_seconds}))
        started = time.perf_counter()
        pred = post.predictive(X_valid)
        pdf = np.exp(pred.log_prob_grid(GRID))
        predict_seconds = time.perf_counter() - started
        out[name] = {"pdf": pdf, "pred": pred, "post": post, "fit_seconds": fit_seconds,
                     "predict_seconds": predict_seconds}
        print(f"[bayes_mdn] {name}: fit {fit_seconds:.0f} s, predict {predict_seconds:.0f} s",
              file=sys.stderr, flush=True)
        if name == "ensemble":  # the recipe: the ensemble's p(z) sharpened on the grid
            out["ensemble sharpened"] = {**out[name], "pdf": sharpen(pdf, exponent),
                                         "pred": None}
    return out


# --------------------------------------------------------------------------- report
def crps_split(pdf: np.ndarray, z_true: np.ndarray) -> dict[str, float]:
    """Where a method's CRPS comes from: its galaxies whose mode is a 0.15 outlier
    (``|z_mode - z| / (1 + z) > 0.15``) and the rest, each as its sum over all N galaxies'
    mean (the two add up to the CRPS)."""
    import bayes_mdn as bm

    per_galaxy = bm.metrics.gridded_crps(pdf, GRID, z_true)
    tails = np.abs(GRID[np.argmax(pdf, axis=1)] - z_true) / (1 + z_true) > 0.15
    return {"crps_core": float(per_galaxy[~tails].sum() / z_true.size),
            "crps_0.15_outliers": float(per_galaxy[tails].sum() / z_true.size)}


def common_cut_outliers(pdf: np.ndarray, z_true: np.ndarray) -> dict[str, float]:
    """The outlier rate of the mode at one cut for every method, |dz| / (1 + z) > 0.06 (the
    RAIL rule's floor). The RAIL rule's own cut, max(0.06, 3 sigma_IQR), grows with each
    method's core scatter, so a method with a wide core is judged by a looser cut (NGBoost's
    is 0.12); this column compares every method at the same cut."""
    import bayes_mdn as bm

    return {"outlier_rate_0.06": bm.metrics.outlier_rate(GRID[np.argmax(pdf, axis=1)],
                                                         z_true, threshold=0.06)}


COLUMNS = ("log_score", "crps", "crps_core", "crps_0.15_outliers", "cde_loss", "sigma_iqr",
           "sigma_nmad", "bias", "outlier_rate", "outlier_rate_0.06", "outlier_rate_0.15",
           "pit_ks_statistic",
           "pit_cvm_statistic", "pit_ad_statistic", "fit_seconds", "predict_seconds")


def markdown_table(rows: list[dict]) -> str:
    header = ["method", *COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["method"]]
        for column in COLUMNS:
            value = row.get(column)
            if value is None:
                cells.append("")
            elif column.endswith("seconds"):
                cells.append(f"{value:.0f}")
            elif column in ("log_score", "cde_loss", "pit_cvm_statistic", "pit_ad_statistic"):
                cells.append(f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}")
            else:
                cells.append(f"{value:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get(
        "BAYES_MDN_PHOTOZ_DIR", DEFAULT_DATA)))
    parser.add_argument("--quick", action="store_true",
                        help="3000 validation galaxies, short fits: a smoke run")
    parser.add_argument("--peers-python", help="python of the venv with the peers installed")
    parser.add_argument("--peers", nargs="+", default=list(PEERS), choices=PEERS)
    parser.add_argument("--peers-from", type=Path, nargs="+",
                        help="merge the peers' results written to these folders by "
                             "`<peers python> benchmarks/photoz.py --run-peers FOLDER "
                             "[--peers ...]` (waits for runs still going)")
    parser.add_argument("--workdir", type=Path,
                        help="folder for bayes_mdn's fitted posteriors; a rerun with the same "
                             "folder loads them instead of fitting (default: a new temporary "
                             "folder)")
    parser.add_argument("--methods", nargs="+", default=list(OURS), choices=OURS,
                        help="which bayes_mdn fits to run (the ensemble's sharpened p(z) "
                             "comes with the ensemble); with --workdir a later run can add "
                             "the others")
    parser.add_argument("--run-peers", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_peers is not None:  # the subprocess in the peers' venv
        run_peers(args.peers, args.data, args.run_peers, args.quick)
        return

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import RESULTS, machine

    import bayes_mdn as bm

    train, valid = load(args.data)
    rows_valid = validation_rows(len(valid), args.quick)
    valid = valid.iloc[rows_valid]
    z_true = valid["redshift"].to_numpy()
    peer_dirs = args.peers_from or [Path(tempfile.mkdtemp(prefix="photoz_peers_"))]
    peer_dir = peer_dirs[0]
    peers_info = {"peers": {}, "versions": {}}
    if args.peers_python and not args.peers_from:
        command = [args.peers_python, str(Path(__file__).resolve()), "--run-peers",
                   str(peer_dir), "--data", str(args.data), "--peers", *args.peers]
        if args.quick:
            command.append("--quick")
        # Beside the bayes_mdn fits (the two processes share the CPUs; see the docstring).
        peers = subprocess.Popen(command)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="photoz_bayes_mdn_"))
    ours = run_bayes_mdn(train, valid, args.quick, workdir,
                         ("ensemble", *args.methods))
    if args.peers_python and not args.peers_from:
        if peers.wait() != 0:
            raise RuntimeError(f"the peers' process failed (exit code {peers.returncode})")
    peer_files = {}
    if args.peers_python or args.peers_from:
        for folder in peer_dirs:
            for _ in range(720):  # --peers-from a run still going: wait for it (up to 2 h)
                if (folder / "peers.json").exists():
                    break
                time.sleep(10)
            info = json.loads((folder / "peers.json").read_text())
            peers_info["peers"].update(info["peers"])
            peers_info["versions"].update(info["versions"])
            peer_files.update({name: folder / f"{name}.npy" for name in info["peers"]})

    # Two validation galaxies lie beyond RAIL's grid (z up to 3.026 > 3): every peer's p(z)
    # stops at 3, so they are left out of every method's scores (counted in the JSON).
    scored = np.flatnonzero(z_true <= GRID[-1])
    z_true = z_true[scored]
    rows, details = [], {}
    for name in ("ensemble", "ensemble sharpened", "ensemble recalibrated", "svi"):
        if name not in ours:
            continue
        entry = ours[name]
        report = bm.metrics.photoz_report(entry["pdf"][scored], z_true, grid=GRID)
        report.update(crps_split(entry["pdf"][scored], z_true))
        report.update(common_cut_outliers(entry["pdf"][scored], z_true))
        rows.append({"method": f"bayes_mdn {name}", **report,
                     "fit_seconds": entry["fit_seconds"],
                     "predict_seconds": entry["predict_seconds"]})
        details[f"bayes_mdn {name}"] = {"grid": report}
        if entry["pred"] is not None:  # the sharpened p(z) exists on the grid only
            details[f"bayes_mdn {name}"]["exact"] = bm.metrics.photoz_report(
                entry["pred"][scored], z_true, grid=GRID)
    for name, info in peers_info.get("peers", {}).items():
        if "error" in info:
            details[name] = info
            continue
        pdf = np.load(peer_files[name]).astype(np.float64)[scored]
        report = bm.metrics.photoz_report(pdf, z_true, grid=GRID)
        report.update(crps_split(pdf, z_true))
        report.update(common_cut_outliers(pdf, z_true))
        rows.append({"method": name, **report, "fit_seconds": info["fit_seconds"],
                     "predict_seconds": info["predict_seconds"]})
        details[name] = {"grid": report, **{k: v for k, v in info.items()
                                            if not k.endswith("seconds")}}
    table = markdown_table(rows)
    print(table)
    suffix = "_quick" if args.quick else ""
    RESULTS.mkdir(exist_ok=True)
    payload = {"settings": {**ours["settings"], "grid": [0.0, 3.0, 301], "seed": SEED,
                            "num_training": len(train), "num_validation": len(valid),
                            "num_scored": int(scored.size),
                            "num_beyond_grid": int(len(valid) - scored.size),
                            "tune_fraction": TUNE_FRACTION, "quick": args.quick,
                            "peer_versions": peers_info.get("versions", {}),
                            "load": os.getloadavg()},
               "machine": machine(), "rows": rows, "details": details}
    target = RESULTS / f"photoz{suffix}.json"
    temporary = target.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(payload, indent=2, default=float))
    temporary.replace(target)
    (RESULTS / f"photoz{suffix}.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
