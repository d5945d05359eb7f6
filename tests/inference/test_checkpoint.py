"""Checkpoint and resume of long fits (MAP, SVI, NUTS): a resumed run continues the same
trajectory or chains, bit for bit; a crash leaves the last checkpoint intact; a checkpoint
of another run, or a damaged one, is refused with a clear error."""

from __future__ import annotations

import json
import os
import zipfile

import jax
import numpy as np
import pytest

import bayes_mdn as bm
from bayes_mdn.inference._checkpoint import CheckpointPlan

N = 40
MODEL = bm.MDN(num_components=2, hidden_sizes=(3,))
# Blocks of 10 steps in every fit (num_evaluations = num_steps / 10, which may differ on
# resume), so that one compiled block kernel serves the whole module.
MAP = {"method": "map", "ema_decay": 0.9}
SVI = {"method": "svi", "num_draws": 16, "num_eval_draws": 4}
NUTS = {"method": "nuts", "num_warmup": 10, "num_chains": 2, "max_tree_depth": 3}


def _blocks(num_steps: int) -> dict[str, int]:
    return {"num_steps": num_steps, "num_evaluations": num_steps // 10}


def _key(seed: int = 1) -> jax.Array:
    return jax.random.key(seed)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, 1))
    return X, np.sin(2.0 * X[:, 0]) + 0.1 * rng.normal(size=N)


def _assert_same_fit(a: bm.Posterior, b: bm.Posterior, *, history: tuple[str, ...] = ()):
    assert set(a.draws) == set(b.draws)
    for name, value in a.draws.items():
        np.testing.assert_array_equal(np.asarray(b.draws[name]), np.asarray(value),
                                      err_msg=name)
    for name, value in a.sample_stats.items():
        np.testing.assert_array_equal(b.sample_stats[name], value, err_msg=name)
    for name in history:
        np.testing.assert_array_equal(b.history[name], a.history[name], err_msg=name)


class _Crash(Exception):
    """Stands in for the process dying."""


def _crash_after(monkeypatch, num_writes: int) -> None:
    """Make the fit 'die' right after its `num_writes`-th checkpoint write."""
    original = CheckpointPlan.write
    calls = []

    def write(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == num_writes:
            raise _Crash

    monkeypatch.setattr(CheckpointPlan, "write", write)


# --------------------------------------------------------------------------- MAP
@pytest.fixture(scope="module")
def map_full(data) -> bm.Posterior:
    X, y = data
    return MODEL.fit(X, y, key=_key(), **_blocks(40), **MAP)


def test_map_n_steps_then_resume_to_2n_equals_2n_steps(data, map_full, tmp_path):
    X, y = data
    path = tmp_path / "map.ckpt"
    MODEL.fit(X, y, key=_key(), **_blocks(20), checkpoint=path, **MAP)
    resumed = MODEL.fit(X, y, key=_key(), **_blocks(40), resume=path, **MAP)
    _assert_same_fit(map_full, resumed, history=("loss",))
    np.testing.assert_array_equal(resumed.predictive(X).log_prob(y),
                                  map_full.predictive(X).log_prob(y))
    # Evaluations: the resumed run's steps 20 and 40 are also in the uninterrupted run.
    assert resumed.history["eval_step"][-1] == 40


def test_map_resume_after_a_crash_equals_the_uninterrupted_run(data, map_full, tmp_path,
                                                               monkeypatch):
    X, y = data
    path = tmp_path / "map.ckpt"
    options = dict(**_blocks(40), checkpoint=path, checkpoint_every=15, **MAP)
    _crash_after(monkeypatch, 2)  # dies after the checkpoint at step 30
    with pytest.raises(_Crash):
        MODEL.fit(X, y, key=_key(), **options)
    monkeypatch.undo()
    resumed = MODEL.fit(X, y, key=_key(), resume=path, **options)
    _assert_same_fit(map_full, resumed, history=("loss",))
    assert sorted(os.listdir(tmp_path)) == ["map.ckpt"]  # no temporary files left behind


def test_map_checkpoints_do_not_change_the_fit(data, map_full, tmp_path):
    X, y = data
    checkpointed = MODEL.fit(X, y, key=_key(), **_blocks(40), checkpoint=tmp_path / "c.ckpt",
                             checkpoint_every=7, **MAP)
    _assert_same_fit(map_full, checkpointed, history=("loss",))
    # Blocks are cut at the checkpoints: evaluations there too, ending at num_steps.
    assert {7, 14, 21, 28, 35, 40} <= set(checkpointed.history["eval_step"].tolist())


def test_resuming_a_finished_run_returns_it(data, map_full, tmp_path):
    X, y = data
    path = tmp_path / "done.ckpt"
    MODEL.fit(X, y, key=_key(), **_blocks(40), checkpoint=path, **MAP)
    again = MODEL.fit(X, y, key=_key(), **_blocks(40), resume=path, **MAP)
    _assert_same_fit(map_full, again, history=("loss", "eval_step", "train_log_likelihood"))


# --------------------------------------------------------------------------- SVI
@pytest.mark.slow  # compiles an SVI program (~15 s); MAP covers the shared block runner
def test_svi_n_steps_then_resume_to_2n_equals_2n_steps(data, tmp_path):
    X, y = data
    full = MODEL.fit(X, y, key=_key(), **_blocks(40), **SVI)
    path = tmp_path / "svi.ckpt"
    MODEL.fit(X, y, key=_key(), **_blocks(20), checkpoint=path, checkpoint_every=15, **SVI)
    resumed = MODEL.fit(X, y, key=_key(), **_blocks(40), resume=path, checkpoint=path, **SVI)
    _assert_same_fit(full, resumed, history=("loss", "elbo"))
    with zipfile.ZipFile(path) as archive:  # rewritten at the end of the resumed run
        assert json.loads(archive.read("metadata.json"))["num_done"] == 40


# --------------------------------------------------------------------------- NUTS
@pytest.mark.slow  # about 4 NUTS compilations: 30-60 s on two CPU cores
def test_nuts_n_draws_then_resume_to_2n_continues_the_same_chains(data, tmp_path):
    X, y = data
    # One plain run of 2N = 8 draws per chain, against N with a checkpoint + resume N more.
    # (Each NUTS run or segment compiles its sampling loop: this test is the costly one.)
    full = MODEL.fit(X, y, key=_key(), num_samples=8, **NUTS)
    path = tmp_path / "nuts.ckpt"
    first = MODEL.fit(X, y, key=_key(), num_samples=4, checkpoint=path, **NUTS)
    resumed = MODEL.fit(X, y, key=_key(), num_samples=8, resume=path, **NUTS)
    assert (resumed.num_chains, resumed.num_draws) == (2, 8)
    _assert_same_fit(full, resumed)
    for name, value in first.draws.items():
        np.testing.assert_array_equal(np.asarray(resumed.draws[name])[:, :4], value)
    assert resumed.info["num_samples"] == 8


@pytest.mark.slow
def test_nuts_crash_and_resume(data, tmp_path, monkeypatch):
    X, y = data
    plain = MODEL.fit(X, y, key=_key(), num_samples=9, **NUTS)
    path = tmp_path / "crash.ckpt"
    options = dict(num_samples=9, checkpoint=path, checkpoint_every=3, **NUTS)
    _crash_after(monkeypatch, 3)  # end of warm-up, 3 draws, 6 draws: then dies
    with pytest.raises(_Crash):
        MODEL.fit(X, y, key=_key(), **options)
    monkeypatch.undo()
    _assert_same_fit(plain, MODEL.fit(X, y, key=_key(), resume=path, **options))


@pytest.mark.slow
def test_nuts_single_chain_resume(data, tmp_path):
    X, y = data
    options = {**NUTS, "num_chains": 1}
    plain = MODEL.fit(X, y, key=_key(), num_samples=6, **options)
    path = tmp_path / "one.ckpt"
    MODEL.fit(X, y, key=_key(), num_samples=3, checkpoint=path, **options)
    _assert_same_fit(plain, MODEL.fit(X, y, key=_key(), num_samples=6, resume=path, **options))


@pytest.mark.slow
def test_ensemble_resume(data, tmp_path):
    X, y = data
    options = dict(method="ensemble", num_members=3, num_evaluations=4)
    full = MODEL.fit(X, y, key=_key(), num_steps=30, **options)
    path = tmp_path / "ens.ckpt"
    MODEL.fit(X, y, key=_key(), num_steps=12, checkpoint=path, **options)
    resumed = MODEL.fit(X, y, key=_key(), num_steps=30, resume=path, **options)
    assert resumed.info["num_members"] == 3
    _assert_same_fit(full, resumed, history=("loss", "member_loss"))


# --------------------------------------------------------------------------- atomic writes
def test_a_crash_while_writing_keeps_the_previous_checkpoint(data, tmp_path, monkeypatch):
    X, y = data
    path = tmp_path / "run.ckpt"
    original_write, original_array = CheckpointPlan.write, np.lib.format.write_array
    checkpoints, arrays = [], []

    def write(self, *args, **kwargs):
        checkpoints.append(1)
        original_write(self, *args, **kwargs)

    def write_array(*args, **kwargs):  # the second checkpoint dies after 5 arrays
        if len(checkpoints) == 2:
            arrays.append(1)
            if len(arrays) > 5:
                raise OSError("disk full (simulated)")
        return original_array(*args, **kwargs)

    monkeypatch.setattr(CheckpointPlan, "write", write)
    monkeypatch.setattr(np.lib.format, "write_array", write_array)
    with pytest.raises(OSError, match=r"disk full \(simulated\)"):
        MODEL.fit(X, y, key=_key(), **_blocks(40), checkpoint=path, checkpoint_every=10, **MAP)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["run.ckpt"]
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        assert json.loads(archive.read("metadata.json"))["num_done"] == 10
    # ... and it resumes.
    MODEL.fit(X, y, key=_key(), **_blocks(40), resume=path, **MAP)


# --------------------------------------------------------------------------- refusals
@pytest.fixture(scope="module")
def map_checkpoint(data, tmp_path_factory):
    X, y = data
    path = tmp_path_factory.mktemp("ckpt") / "map.ckpt"
    MODEL.fit(X, y, key=_key(), **_blocks(20), checkpoint=path, **MAP)
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"key": jax.random.key(2)}, r"different run: key\.data"),
        ({"learning_rate": 0.02}, r"different run: options\.learning_rate \(checkpoint: 0\.01, "
                                  r"now: 0\.02\)"),
        ({"ema_decay": 0.5}, r"options\.ema_decay \(checkpoint: 0\.9, now: 0\.5\)"),
        ({"y_shift": 1.0}, r"different run: data \(checkpoint: '[0-9a-f]+', now: "),
        ({"model": bm.MDN(num_components=3, hidden_sizes=(3,))},
         r"model\.num_components \(checkpoint: 2, now: 3\)"),
        ({"num_steps": 10}, r"already holds 20 steps; pass num_steps >= 20 to resume it\."),
        ({"method": "svi"}, r"is a checkpoint of method='map'; it cannot resume "
                            r"method='svi'\."),
    ],
)
def test_resume_refuses_another_run(data, map_checkpoint, change, message):
    X, y = data
    change = dict(change)
    model = change.pop("model", MODEL)
    y = y + change.pop("y_shift", 0.0)
    options = {**MAP, "key": _key(), **_blocks(40), **change}
    if options["method"] == "svi":
        options = {"method": "svi", "key": _key(), "num_steps": 40}
    with pytest.raises(ValueError, match=message):
        model.fit(X, y, resume=map_checkpoint, **options)


def test_resume_missing_file(data, tmp_path):
    X, y = data
    with pytest.raises(FileNotFoundError, match=r"No bayes_mdn checkpoint at '.*nope\.ckpt' to "
                                                r"resume\."):
        MODEL.fit(X, y, key=_key(), num_steps=5, resume=tmp_path / "nope.ckpt")


def test_resume_from_a_posterior_file(data, map_full, tmp_path):
    X, y = data
    map_full.save(tmp_path / "fit.bmdn")
    with pytest.raises(ValueError, match=r"is not a bayes_mdn checkpoint file\. It is a saved "
                                         r"posterior: load it with bayes_mdn\.load\."):
        MODEL.fit(X, y, key=_key(), num_steps=5, resume=tmp_path / "fit.bmdn")


def test_load_a_checkpoint_as_a_posterior(map_checkpoint):
    with pytest.raises(ValueError, match=r"is not a bayes_mdn posterior file\. It is a fit "
                                         r"checkpoint: continue it with fit\(\.\.\., "
                                         r"resume=path\)\."):
        bm.load(map_checkpoint)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.95])
def test_resume_truncated_checkpoint(data, map_checkpoint, tmp_path, fraction):
    X, y = data
    contents = map_checkpoint.read_bytes()
    path = tmp_path / "cut.ckpt"
    path.write_bytes(contents[: int(len(contents) * fraction)])
    with pytest.raises(ValueError, match=r"is not a readable bayes_mdn file \(truncated or "
                                         r"corrupted\?\)"):
        MODEL.fit(X, y, key=_key(), **_blocks(40), resume=path, **MAP)


def _rewrite_metadata(source, destination, edit):
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(destination, "w") as dst:
        for name in src.namelist():
            contents = src.read(name)
            if name == "metadata.json":
                metadata = json.loads(contents)
                edit(metadata)
                contents = json.dumps(metadata)
            dst.writestr(name, contents)


def test_resume_future_checkpoint_version(data, map_checkpoint, tmp_path):
    X, y = data
    path = tmp_path / "future.ckpt"
    _rewrite_metadata(map_checkpoint, path, lambda m: m.update(format_version=7))
    with pytest.raises(ValueError, match=r"has format version 7; this bayes_mdn reads version "
                                         r"1\. Upgrade bayes_mdn"):
        MODEL.fit(X, y, key=_key(), **_blocks(40), resume=path, **MAP)


def test_resume_checkpoint_without_progress(data, map_checkpoint, tmp_path):
    X, y = data
    path = tmp_path / "no_progress.ckpt"
    _rewrite_metadata(map_checkpoint, path, lambda m: m.pop("num_done"))
    with pytest.raises(ValueError, match=r"is not a readable bayes_mdn checkpoint \(no "
                                         r"signature or progress\)\."):
        MODEL.fit(X, y, key=_key(), **_blocks(40), resume=path, **MAP)


def test_resume_checkpoint_with_a_damaged_state(data, map_checkpoint, tmp_path):
    X, y = data
    path = tmp_path / "damaged.ckpt"
    with zipfile.ZipFile(map_checkpoint) as src, zipfile.ZipFile(path, "w") as dst:
        for name in src.namelist():
            if name != "state/3.npy":
                dst.writestr(name, src.read(name))
    with pytest.raises(ValueError, match=r"is incomplete: array 'state/3' is missing\."):
        MODEL.fit(X, y, key=_key(), **_blocks(40), resume=path, **MAP)


# --------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"checkpoint_every": 10}, ValueError,
         r"`checkpoint_every` needs `checkpoint`, the file to write, e\.g\. "
         r"checkpoint='run\.ckpt', checkpoint_every=1000 \(steps\)\."),
        ({"checkpoint": "a.ckpt", "checkpoint_every": 0}, ValueError,
         r"`checkpoint_every` must be at least 1; got 0\."),
        ({"checkpoint": 3}, TypeError,
         r"`checkpoint` must be a file path \(str or os\.PathLike\); got int\."),
        ({"resume": ["a.ckpt"]}, TypeError, r"`resume` must be a file path"),
        ({"method": "nuts", "thinning": 2, "checkpoint": "a.ckpt", "checkpoint_every": 3},
         ValueError, r"With checkpoints, `checkpoint_every` must be a multiple of `thinning` "
                     r"\(2\); got 3\."),
        ({"method": "nuts", "checkpoint_every": 3}, ValueError,
         r"`checkpoint_every` needs `checkpoint`.* \(draws per chain\)\."),
    ],
)
def test_bad_checkpoint_options(data, options, error, message):
    X, y = data
    with pytest.raises(error, match=message):
        MODEL.fit(X, y, key=_key(), **options)


def test_checkpoint_path_is_a_directory(data, tmp_path):
    X, y = data
    with pytest.raises(ValueError, match=r"`checkpoint` '.*' is a directory; pass a file path "
                                         r"such as 'run\.ckpt'\."):
        MODEL.fit(X, y, key=_key(), num_steps=5, checkpoint=tmp_path)
