"""``hierarchy simulate`` on failures and limits: exit codes, messages and the files still written."""

import warnings

import numpy as np
import pytest

from hierarchy import cli
from hierarchy.cli import main
from hierarchy.simulation import read_simulation_csv

PROBLEM = "[problem]\nd = 10\na = 1.5\n"
TRAINING = '[training]\nmethod = "sgd"\neta = 0.01\nsteps = 200\ntest_size = 0\nrecord_points = 10\n'


def _simulate(tmp_path, text: str) -> tuple:
    config = tmp_path / "simulate.toml"
    config.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    return main(["simulate", str(config), "--out", str(out), "--quiet"]), out


def test_flow_step_budget_fails_run(tmp_path, capsys):
    exit_code, out = _simulate(tmp_path, PROBLEM + TRAINING + "[solver]\nmax_steps = 1\n")
    printed = capsys.readouterr().out

    assert exit_code == 1
    assert "exact-flow overlay stopped early for 1 of 1 seeds, first after t = " in printed
    assert "STEP_BUDGET: step budget of 1 steps exhausted at t = " in printed
    # The loss is compared only up to where the flow stopped, never at the last time t = 2.
    assert "loss vs ODE at t = 2:" not in printed
    assert "bias of order eta" not in printed
    columns = read_simulation_csv(out / "simulation.csv")
    assert np.isnan(columns["ode_loss_seed0"][-1])
    assert np.isfinite(columns["loss_seed0"][-1])
    assert (out / "simulation.png").is_file()


def test_training_wall_limit_fails_run(tmp_path, capsys):
    training = TRAINING + "max_wall_seconds = 1e-9\n"
    exit_code, out = _simulate(tmp_path, PROBLEM + training)
    printed = capsys.readouterr().out

    assert exit_code == 1
    assert "seed 0:     TIMED_OUT; timed out after 0 steps (t = 0) of 200" in printed
    assert "max_wall_seconds = 1e-09 s" in printed
    assert (out / "simulation.csv").is_file()


@pytest.mark.parametrize(
    "text, message",
    [
        (
            PROBLEM + TRAINING.replace("steps = 200", "steps = 1000000000000"),
            "training.steps = 1000000000000 is invalid: the number of steps must be an integer in [1, 1e+10]",
        ),
        (
            PROBLEM + TRAINING.replace("steps = 200", "steps = 10000000000") + "batch = 1000\n",
            "steps * batch = 10000000000 * 1000 = 1e+13 is invalid: a seed may read at most 1e+12 samples",
        ),
        (
            PROBLEM + TRAINING + "batch = 20000000\n",
            "training.batch = 20000000 is too large for d = 10",
        ),
        (
            PROBLEM + TRAINING + "max_wall_seconds = 0.0\n",
            "training.max_wall_seconds = 0.0 is invalid",
        ),
    ],
    ids=["steps", "samples", "batch_per_step", "wall_limit"],
)
def test_work_bounds_name_field(tmp_path, capsys, text, message):
    exit_code, out = _simulate(tmp_path, text)
    assert exit_code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, names",
    [
        ("[solver]\nt_end = 5.0\nn_out = 3\n", "solver.t_end, solver.n_out are not used by hierarchy simulate"),
        ("[solver]\nt_first = 0.1\n", "solver.t_first is not used by hierarchy simulate"),
    ],
)
def test_unused_solver_keys_rejected(tmp_path, capsys, extra, names):
    exit_code, _ = _simulate(tmp_path, PROBLEM + TRAINING + extra)
    error = capsys.readouterr().err
    assert exit_code == 2
    assert names in error
    assert "training.record_points" in error


def test_problem_seed_rejected(tmp_path, capsys):
    exit_code, _ = _simulate(tmp_path, PROBLEM + "seed = 3\n" + TRAINING)
    error = capsys.readouterr().err
    assert exit_code == 2
    assert "problem.seed is not used by hierarchy simulate" in error
    assert "training.seeds" in error


def test_workers_above_maximum_rejected(tmp_path, capsys):
    exit_code, _ = _simulate(tmp_path, PROBLEM + TRAINING + "workers = 100000\n")
    assert exit_code == 2
    assert "training.workers = 100000 is invalid: it must be an integer in [1, 256]" in capsys.readouterr().err


def test_workers_over_memory_bound_rejected(tmp_path, capsys):
    # Each gd seed keeps a 1e7 x 10 data matrix (1e8 elements), so 4e8 elements fit 4 seeds at once.
    training = '[training]\nmethod = "gd"\neta = 0.01\nsteps = 10\nn = 10000000\ntest_size = 0\nseeds = [0, 1, 2, 3, 4, 5]\nworkers = 5\n'
    exit_code, _ = _simulate(tmp_path, PROBLEM + training)
    error = capsys.readouterr().err
    assert exit_code == 2
    assert "training.workers = 5 is too many for these data sizes" in error
    assert "set workers to at most 4" in error


def test_divergence_prints_no_python_warning(tmp_path, capsys):
    training = '[training]\nmethod = "sgd"\neta = 100.0\nsteps = 1000\nseeds = [0, 1]\ntest_size = 10\n'
    # A Python warning raised anywhere in the run turns into an exception here.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exit_code, _ = _simulate(tmp_path, "[problem]\nd = 50\na = 1.5\n" + training)
    captured = capsys.readouterr()
    assert exit_code == 1
    assert "DIVERGED; diverged after" in captured.out
    assert "RuntimeWarning" not in captured.err


def test_python_warning_logged_as_diagnostic(tmp_path, capsys, monkeypatch):
    simulate = cli.run_simulation

    def warn_then_simulate(*arguments, **keywords):
        warnings.warn("overflow encountered in square", RuntimeWarning)
        return simulate(*arguments, **keywords)

    monkeypatch.setattr(cli, "run_simulation", warn_then_simulate)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        exit_code, _ = _simulate(tmp_path, PROBLEM + TRAINING)
    error = capsys.readouterr().err
    assert exit_code == 0
    assert "WARNING hierarchy.cli: RuntimeWarning from" in error
    assert "overflow encountered in square. The values it affected may be inf or nan" in error
    assert ": RuntimeWarning: overflow" not in error
