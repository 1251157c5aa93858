"""Finite-sample GD and SGD: reproducibility, recorded statistics, agreement with the exact flow, validation."""

import logging
import math
import warnings
from dataclasses import replace

import numpy as np
import pytest

from hierarchy.experiments import (
    MAX_MATRIX_ELEMENTS,
    MAX_RESIDENT_ELEMENTS,
    MAX_SAMPLES,
    MAX_SEEDS,
    MAX_STEPS,
    MAX_WORKERS,
    SeedStatus,
    TrainingSettings,
    record_steps,
    run_training,
    seed_generators,
    seed_mean,
    seed_stderr,
)
from hierarchy.experiments import training as training_module
from hierarchy.model import PhaseRetrieval
from hierarchy.pipeline import SolverOptions
from hierarchy.simulation import CSV_FILE, PLOT_FILE, read_simulation_csv, run_simulation
from hierarchy.spectrum import PowerLawSpec

SOLVER = SolverOptions(rtol=1e-8, atol=1e-12)


def _assert_same_arrays(first, second):
    for name in ("m1", "q1", "loss", "test_loss", "train_loss"):
        assert np.array_equal(getattr(first, name), getattr(second, name), equal_nan=True), name


# Reproducibility


@pytest.mark.parametrize(
    "settings",
    [
        TrainingSettings("sgd", eta=0.01, steps=3000, seeds=(0, 1, 2), batch=2, test_size=50, record_points=20),
        TrainingSettings("gd", eta=0.02, steps=300, seeds=(0, 1, 2), n=200, test_size=50, record_points=20),
    ],
    ids=["sgd", "gd"],
)
def test_seeds_reproduce_bit_for_bit(settings):
    spec = PowerLawSpec(d=40, a=1.5)
    first = run_training(spec, settings, workers=1)
    second = run_training(spec, settings, workers=2)
    _assert_same_arrays(first, second)

    # A seed's row does not depend on which other seeds run with it.
    alone = run_training(spec, replace(settings, seeds=(2,)), workers=1)
    for name in ("m1", "q1", "test_loss"):
        assert np.array_equal(getattr(alone, name)[0], getattr(first, name)[2], equal_nan=True), name


def test_seed_streams_independent():
    draws = {}
    for seed in (0, 1):
        training_generator, test_generator = seed_generators(seed)
        draws[(seed, "training")] = training_generator.standard_normal(20000)
        draws[(seed, "test")] = test_generator.standard_normal(20000)
    draws[(0, "initial point")] = np.random.default_rng(0).standard_normal(20000)

    # Pairwise correlations of independent N(0, 1) streams are about N(0, 1/20000).
    names = list(draws)
    for index, first in enumerate(names):
        for second in names[index + 1 :]:
            correlation = np.corrcoef(draws[first], draws[second])[0, 1]
            assert abs(correlation) < 5.0 / math.sqrt(20000), (first, second)


def test_different_seeds_give_different_runs():
    spec = PowerLawSpec(d=30, a=1.0)
    result = run_training(spec, TrainingSettings("sgd", eta=0.01, steps=500, seeds=(0, 1), test_size=10, record_points=5))
    assert not np.array_equal(result.m1[0], result.m1[1])
    assert not np.array_equal(result.test_loss[0], result.test_loss[1])


# Recorded statistics


def test_population_loss_equals_model_formula():
    spec = PowerLawSpec(d=60, a=1.5, b=0.5)
    result = run_training(spec, TrainingSettings("sgd", eta=0.01, steps=2000, seeds=(3, 4), test_size=20, record_points=15))
    expected = PhaseRetrieval().loss(result.q1, result.m1, result.rho1)
    assert np.array_equal(result.loss, expected)
    assert result.rho1 == pytest.approx(1.0, rel=1e-12)


def test_step_zero_is_initial_point_of_seed():
    spec = PowerLawSpec(d=60, a=1.5, sigma0=0.3)
    result = run_training(spec, TrainingSettings("gd", eta=0.01, steps=10, n=100, seeds=(5, 9), test_size=0))
    for row, seed in enumerate((5, 9)):
        problem = replace(spec, seed=seed).build()
        assert result.m1[row, 0] == pytest.approx(problem.m(1), rel=1e-14)
        assert result.q1[row, 0] == pytest.approx(problem.q(1), rel=1e-14)
    assert np.all(np.isnan(result.test_loss))


def _reference_sgd(spec, seed, eta, batch, steps):
    """One-pass SGD written with NumPy vectors, drawing the same samples as the compiled loop."""
    problem = replace(spec, seed=seed).build()
    generator, _ = seed_generators(seed)
    sqrt_lam = np.sqrt(problem.lam)
    w = problem.w0.copy()
    statistics = {0: (problem.m(1, w), problem.q(1, w))}
    for step in range(1, steps + 1):
        gradient = np.zeros_like(w)
        for _ in range(batch):
            x = sqrt_lam * generator.standard_normal(problem.d)
            student, teacher = w @ x, problem.wstar @ x
            gradient += (student**2 - teacher**2) * student * x
        w = w - eta * gradient / batch
        statistics[step] = (problem.m(1, w), problem.q(1, w))
    return statistics


def _reference_gd(spec, seed, eta, n, steps):
    """Full-batch GD written with NumPy matrix products on the same training data."""
    problem = replace(spec, seed=seed).build()
    generator, _ = seed_generators(seed)
    data = generator.standard_normal((n, problem.d)) * np.sqrt(problem.lam)
    teacher = data @ problem.wstar
    w = problem.w0.copy()
    statistics = {0: (problem.m(1, w), problem.q(1, w))}
    for step in range(1, steps + 1):
        student = data @ w
        w = w - eta * data.T @ ((student**2 - teacher**2) * student) / n
        statistics[step] = (problem.m(1, w), problem.q(1, w))
    return statistics, data, teacher, w


@pytest.mark.parametrize("batch", [1, 3])
def test_sgd_matches_numpy_reference(batch):
    spec = PowerLawSpec(d=25, a=1.0, sigma0=0.5)
    settings = TrainingSettings("sgd", eta=0.05, steps=200, seeds=(7,), batch=batch, test_size=0, record_points=12)
    result = run_training(spec, settings)
    reference = _reference_sgd(spec, 7, 0.05, batch, 200)

    assert np.array_equal(result.t, 0.05 * result.steps)
    for column, step in enumerate(result.steps):
        m1, q1 = reference[int(step)]
        assert result.m1[0, column] == pytest.approx(m1, rel=1e-10, abs=1e-14), step
        assert result.q1[0, column] == pytest.approx(q1, rel=1e-10, abs=1e-14), step


def test_gd_matches_numpy_reference():
    spec = PowerLawSpec(d=25, a=1.0, sigma0=0.5)
    settings = TrainingSettings("gd", eta=0.05, steps=150, seeds=(7,), n=80, test_size=30, record_points=10)
    result = run_training(spec, settings)
    reference, data, teacher, w_end = _reference_gd(spec, 7, 0.05, 80, 150)

    for column, step in enumerate(result.steps):
        m1, q1 = reference[int(step)]
        assert result.m1[0, column] == pytest.approx(m1, rel=1e-10), step
        assert result.q1[0, column] == pytest.approx(q1, rel=1e-10), step

    # Empirical losses at the last step, on the training data and on the held-out set.
    train_loss = 0.25 * np.mean(((data @ w_end) ** 2 - teacher**2) ** 2)
    assert result.train_loss[0, -1] == pytest.approx(train_loss, rel=1e-9)
    _, test_generator = seed_generators(7)
    test_data = test_generator.standard_normal((30, 25)) * np.sqrt(replace(spec, seed=7).build().lam)
    test_teacher = test_data @ replace(spec, seed=7).build().wstar
    test_loss = 0.25 * np.mean(((test_data @ w_end) ** 2 - test_teacher**2) ** 2)
    assert result.test_loss[0, -1] == pytest.approx(test_loss, rel=1e-9)


def test_record_steps_log_spaced():
    steps = record_steps(10**6, 50)
    assert steps[0] == 0
    assert steps[1] == 1
    assert steps[-1] == 10**6
    assert np.all(np.diff(steps) > 0)
    assert steps.size <= 51
    ratios = steps[-10:][1:] / steps[-10:][:-1]
    assert np.allclose(ratios, 10 ** (6 / 49), rtol=1e-3)

    short = record_steps(3, 100)
    assert list(short) == [0, 1, 2, 3]


def test_seed_mean_and_stderr_skip_nonfinite():
    values = np.array([[1.0, 2.0, np.nan], [3.0, np.inf, np.nan], [5.0, 4.0, 7.0]])
    assert np.allclose(seed_mean(values), [3.0, 3.0, 7.0])
    stderr = seed_stderr(values)
    assert stderr[0] == pytest.approx(2.0 / math.sqrt(3.0))
    assert stderr[1] == pytest.approx(1.0)
    assert np.isnan(stderr[2])


# Agreement with the exact flow


def test_gd_follows_flow_through_escape():
    # n = 50 d samples: the escape and the convergence of |m_1| follow the
    # flow; in the tail GD decays more slowly, because the smallest
    # eigenvalues of the empirical Hessian at w* lie below the population ones.
    spec = PowerLawSpec(d=50, a=1.5)
    settings = TrainingSettings("gd", eta=0.02, steps=10_000, n=2500, seeds=(0, 1, 2), test_size=0, record_points=60)
    result = run_simulation(spec, settings, SOLVER)
    assert result.training.all_completed
    assert result.ode_succeeded

    measured, predicted = result.escape_times()
    assert np.all(np.isfinite(measured))
    for seed_index in range(3):
        assert measured[seed_index] == pytest.approx(predicted[seed_index], rel=0.15), seed_index

    t = result.t
    for seed_index in range(3):
        after_escape = t >= 2.0 * predicted[seed_index]
        overlap_gap = np.abs(np.abs(result.training.m1[seed_index]) - np.abs(result.ode_m1[seed_index]))
        assert np.max(overlap_gap[after_escape]) < 0.02, seed_index

    relative = result.training.loss / result.ode_loss - 1.0
    through_convergence = (t >= 2.0 * np.max(predicted)) & (t <= 20.0)
    assert np.max(np.abs(relative[:, through_convergence])) < 0.1
    assert np.all(relative[:, -1] > 0.2)


def _sgd_discrepancy(spec, eta, seeds, t_end):
    settings = TrainingSettings("sgd", eta=eta, steps=int(round(t_end / eta)), seeds=seeds, test_size=0, record_points=60)
    result = run_simulation(spec, settings, SOLVER)
    assert result.training.all_completed
    assert result.ode_succeeded
    mean, stderr = result.relative_loss_difference()
    return result, mean[1:], stderr[1:]


def test_sgd_mean_loss_within_standard_errors_of_flow():
    # Paired per seed: (L_sgd - L_flow) / L_flow, mean and standard error
    # over 8 seeds, through escape (t ≈ 3), convergence and the tail up to
    # t = 300 (lam_d t = 0.3). The stated tolerance of 0.05 covers the
    # O(eta) bias, measured at +8 % (eta = 0.005) and +3.5 % (eta = 0.0025)
    # in the tail.
    spec = PowerLawSpec(d=100, a=1.5)
    seeds = tuple(range(8))
    tolerance = 0.05
    maxima = {}
    tail_bias = {}
    for eta in (0.005, 0.0025):
        result, mean, stderr = _sgd_discrepancy(spec, eta, seeds, t_end=300.0)
        inside = np.abs(mean) <= 3.0 * stderr + tolerance
        assert np.mean(inside) >= 0.9, (eta, np.mean(inside))
        maxima[eta] = np.max(np.abs(mean))
        tail_bias[eta] = np.mean(mean[result.t[1:] > 30.0])

    assert maxima[0.0025] < maxima[0.005]
    assert tail_bias[0.005] > 0.0
    assert 0.2 < tail_bias[0.0025] / tail_bias[0.005] < 0.8


@pytest.mark.slow
def test_sgd_d1000_follows_flow():
    spec = PowerLawSpec(d=1000, a=1.5)
    seeds = tuple(range(8))
    maxima = {}
    for eta in (0.005, 0.0025):
        _, mean, stderr = _sgd_discrepancy(spec, eta, seeds, t_end=1000.0)
        inside = np.abs(mean) <= 3.0 * stderr + 0.05
        assert np.mean(inside) >= 0.9, (eta, np.mean(inside))
        maxima[eta] = np.max(np.abs(mean))
    assert maxima[0.0025] < maxima[0.005]


# Divergence, validation, progress


@pytest.mark.parametrize(
    "settings",
    [
        TrainingSettings("sgd", eta=3.0, steps=5000, seeds=(0, 1), test_size=20, record_points=30),
        TrainingSettings("gd", eta=20.0, steps=5000, n=300, seeds=(0, 1), test_size=20, record_points=30),
    ],
    ids=["sgd", "gd"],
)
def test_divergent_step_size_reports_status(settings):
    result = run_training(PowerLawSpec(d=100, a=1.5), settings)
    assert result.status == (SeedStatus.DIVERGED, SeedStatus.DIVERGED)
    assert not result.all_completed
    for row in range(2):
        message = result.messages[row]
        assert "diverged after" in message
        assert "reduce it" in message
        assert result.steps_completed[row] < settings.steps
        recorded = np.isfinite(result.q1[row])
        # What was recorded before the divergence is kept, nothing after it.
        assert recorded[0]
        last = np.flatnonzero(recorded)[-1]
        assert np.all(recorded[: last + 1])
        assert result.steps[last] <= result.steps_completed[row]
        assert np.all(np.isnan(result.loss[row, last + 1 :]))


def test_divergent_seed_leaves_others_running():
    # At eta = 0.05 and d = 100 one-pass SGD sits at the edge of stability:
    # rare large gradients blow up seed 0 after some hundred steps, while
    # seed 1 completes.
    spec = PowerLawSpec(d=100, a=1.5)
    settings = TrainingSettings("sgd", eta=0.05, steps=3000, seeds=(0, 1), test_size=0, record_points=10)
    result = run_training(spec, settings)
    assert result.status == (SeedStatus.DIVERGED, SeedStatus.COMPLETED)
    assert result.messages[1] == "completed 3000 steps (t = 150)"
    assert result.steps_completed[1] == 3000
    assert np.all(np.isfinite(result.loss[1]))
    assert np.isnan(result.loss[0, -1])
    # The mean over seeds uses the seeds that still have a value.
    assert result.mean("loss")[-1] == result.loss[1, -1]


VALID = dict(method="sgd", eta=0.01, steps=100)


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(method="adam"), "method"),
        (dict(eta=0.0), "eta"),
        (dict(eta=-0.1), "eta"),
        (dict(eta=math.nan), "eta"),
        (dict(eta=math.inf), "eta"),
        (dict(eta="0.1"), "eta"),
        (dict(steps=0), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(steps=True), "steps"),
        (dict(seeds=()), "seeds"),
        (dict(seeds=(1, 1)), "seeds"),
        (dict(seeds=(-1,)), "seeds"),
        (dict(seeds=7), "seeds"),
        (dict(batch=0), "batch"),
        (dict(batch=1.5), "batch"),
        (dict(n=100), "n"),
        (dict(method="gd"), "n"),
        (dict(method="gd", n=0), "n"),
        (dict(method="gd", n=100, batch=4), "batch"),
        (dict(test_size=-1), "test_size"),
        (dict(record_points=1), "record_points"),
        (dict(steps=MAX_STEPS + 1), "steps"),
        (dict(batch=MAX_MATRIX_ELEMENTS + 1), "batch"),
        (dict(max_wall_seconds=0.0), "max_wall_seconds"),
        (dict(max_wall_seconds=math.inf), "max_wall_seconds"),
        (dict(max_wall_seconds=True), "max_wall_seconds"),
    ],
)
def test_settings_validation(changes, field):
    with pytest.raises(ValueError) as error:
        TrainingSettings(**{**VALID, **changes})
    message = str(error.value)
    assert message.startswith(f"{field} = ") or message.startswith(f"{field} contains"), message
    assert "invalid" in message


@pytest.mark.parametrize(
    "changes, product",
    [
        (dict(steps=MAX_STEPS, batch=MAX_SAMPLES // MAX_STEPS + 1), "steps * batch"),
        (dict(method="gd", steps=MAX_STEPS, n=MAX_SAMPLES // MAX_STEPS + 1), "steps * n"),
    ],
)
def test_settings_bound_samples_per_seed(changes, product):
    with pytest.raises(ValueError) as error:
        TrainingSettings(**{**VALID, **changes})
    message = str(error.value)
    assert message.startswith(f"{product} = "), message
    assert f"at most {MAX_SAMPLES:.0e} samples" in message


def test_check_dimension_bounds_sgd_step():
    settings = TrainingSettings("sgd", eta=0.01, steps=10, batch=MAX_MATRIX_ELEMENTS // 100 + 1, test_size=0)
    with pytest.raises(ValueError, match="batch = .* is too large for d = 100"):
        settings.check_dimension(100)
    settings.check_dimension(10)


def test_resolve_workers_bounds(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    seeds = tuple(range(16))
    light = TrainingSettings("sgd", eta=0.01, steps=10, seeds=seeds, test_size=0)
    assert light.resolve_workers(100) == 16
    assert light.resolve_workers(100, MAX_WORKERS) == MAX_WORKERS
    with pytest.raises(ValueError, match=f"workers = {MAX_WORKERS + 1} is invalid"):
        light.resolve_workers(100, MAX_WORKERS + 1)

    # Each seed keeps an n x d data matrix of MAX_MATRIX_ELEMENTS elements.
    heavy = TrainingSettings("gd", eta=0.01, steps=10, n=MAX_MATRIX_ELEMENTS // 100, seeds=seeds, test_size=0)
    fitting = MAX_RESIDENT_ELEMENTS // MAX_MATRIX_ELEMENTS
    assert heavy.resolve_workers(100) == fitting
    assert heavy.resolve_workers(100, fitting) == fitting
    with pytest.raises(ValueError, match=f"set workers to at most {fitting}"):
        heavy.resolve_workers(100, fitting + 1)


def test_wall_limit_stops_every_seed():
    settings = TrainingSettings(
        "sgd", eta=0.01, steps=10**6, seeds=(0, 1), test_size=5, record_points=10, max_wall_seconds=1e-9
    )
    result = run_training(PowerLawSpec(d=20, a=1.5), settings, workers=2)
    assert result.status == (SeedStatus.TIMED_OUT, SeedStatus.TIMED_OUT)
    assert not result.all_completed
    for row in range(2):
        assert result.steps_completed[row] < settings.steps
        assert "wall-clock limit of max_wall_seconds = 1e-09 s" in result.messages[row]
        # Step 0 is recorded before the first check of the limit.
        assert np.isfinite(result.loss[row, 0])
        assert np.isfinite(result.test_loss[row, 0])
        assert np.all(np.isnan(result.loss[row, 1:]))


def test_seed_statistics_of_huge_values_warn_nothing():
    values = np.array([[1e300, 1.0], [-1e300, 2.0], [1e308, np.nan]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mean = seed_mean(values)
        stderr = seed_stderr(values)
    assert mean[1] == 1.5
    assert stderr[0] == math.inf


def test_too_many_seeds_message_stays_short():
    with pytest.raises(ValueError) as error:
        TrainingSettings("sgd", eta=0.01, steps=10, seeds=tuple(range(MAX_SEEDS + 1)))
    assert f"seeds = a list of {MAX_SEEDS + 1} seeds is invalid" in str(error.value)
    assert len(str(error.value)) < 200


def test_settings_accept_list_of_seeds():
    settings = TrainingSettings("sgd", eta=0.1, steps=10, seeds=[4, 2])
    assert settings.seeds == (4, 2)
    assert settings.batch_size == 1
    assert TrainingSettings("gd", eta=0.1, steps=10, n=7).batch_size == 7


def test_run_training_rejects_invalid_inputs():
    settings = TrainingSettings("sgd", eta=0.01, steps=10)
    with pytest.raises(ValueError, match="finite d"):
        run_training(PowerLawSpec(d=math.inf, a=1.5, init_teacher_scale=0.1), settings)
    with pytest.raises(ValueError, match="workers = 0 is invalid"):
        run_training(PowerLawSpec(d=10, a=1.0), settings, workers=0)
    too_large = TrainingSettings("gd", eta=0.01, steps=10, n=MAX_MATRIX_ELEMENTS // 100 + 1)
    with pytest.raises(ValueError, match="n = .* is too large for d = 100"):
        run_training(PowerLawSpec(d=100, a=1.0), too_large)
    with pytest.raises(ValueError, match="test_size = .* is too large"):
        run_training(PowerLawSpec(d=100, a=1.0), replace(settings, test_size=MAX_MATRIX_ELEMENTS // 100 + 1))


def test_progress_callback_reaches_total():
    calls = []
    settings = TrainingSettings("sgd", eta=0.01, steps=5000, seeds=(0, 1), test_size=0, record_points=10)
    run_training(PowerLawSpec(d=20, a=1.0), settings, progress=lambda *arguments: calls.append(arguments))
    for seed in (0, 1):
        done = [steps_done for called_seed, steps_done, total in calls if called_seed == seed]
        assert done, seed
        assert done == sorted(done)
        assert done[-1] == 5000
    assert all(total == 5000 for _, _, total in calls)


def test_progress_logged_at_info(monkeypatch, caplog):
    monkeypatch.setattr(training_module, "LOG_INTERVAL_SECONDS", 0.0)
    settings = TrainingSettings("sgd", eta=0.01, steps=300, seeds=(4,), test_size=0, record_points=5)
    with caplog.at_level(logging.INFO, logger="hierarchy.experiments.training"):
        run_training(PowerLawSpec(d=20, a=1.0), settings)
    progress = [record.getMessage() for record in caplog.records if "steps (" in record.getMessage()]
    assert progress
    assert progress[-1].startswith("sgd seed 4: 300/300 steps (100 %)")


# Result files


def test_simulation_writes_csv_and_plot(tmp_path):
    spec = PowerLawSpec(d=30, a=1.5)
    settings = TrainingSettings("gd", eta=0.05, steps=400, n=300, seeds=(0, 3), test_size=40, record_points=25)
    result = run_simulation(spec, settings, SOLVER, tmp_path / "out")

    assert result.files["csv"] == tmp_path / "out" / CSV_FILE
    assert (tmp_path / "out" / PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    columns = read_simulation_csv(result.files["csv"])
    assert np.array_equal(columns["step"], result.steps)
    assert np.array_equal(columns["t"], result.t)
    assert np.array_equal(columns["loss_seed3"], result.training.loss[1])
    assert np.array_equal(columns["m1_seed0"], result.training.m1[0])
    assert np.array_equal(columns["test_loss_seed0"], result.training.test_loss[0])
    assert np.array_equal(columns["train_loss_seed3"], result.training.train_loss[1])
    assert np.array_equal(columns["abs_m1_mean"], result.training.mean("abs_m1"))
    assert np.array_equal(columns["q1_stderr"], result.training.stderr("q1"), equal_nan=True)
    assert np.array_equal(columns["ode_q1_seed3"], result.ode_q1[1])
    assert np.array_equal(columns["ode_abs_m1_mean"], np.mean(np.abs(result.ode_m1), axis=0))
    assert "loss_relative_difference_stderr" in columns

    # The flow starts at each seed's initial point.
    for row, seed in enumerate((0, 3)):
        problem = replace(spec, seed=seed).build()
        assert result.ode_m1[row, 0] == pytest.approx(problem.m(1), rel=1e-14)

    description = result.describe()
    assert [entry["status"] for entry in description["seeds"]] == ["COMPLETED", "COMPLETED"]
    assert description["training"]["n"] == 300


def test_simulation_plot_with_diverged_seeds(tmp_path):
    spec = PowerLawSpec(d=30, a=1.5)
    settings = TrainingSettings("sgd", eta=4.0, steps=300, seeds=(0, 1), test_size=10, record_points=20)
    result = run_simulation(spec, settings, SOLVER, tmp_path)
    assert result.training.status == (SeedStatus.DIVERGED, SeedStatus.DIVERGED)
    assert (tmp_path / PLOT_FILE).stat().st_size > 0
    columns = read_simulation_csv(tmp_path / CSV_FILE)
    assert np.isnan(columns["loss_seed0"][-1])
    assert not any(name.startswith("train_loss") for name in columns)
