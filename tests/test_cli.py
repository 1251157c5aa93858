"""End-to-end tests of ``hierarchy run`` and of the result files it writes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hierarchy.cli import main
from hierarchy.io import read_trajectory_csv, write_trajectory_csv
from hierarchy.provenance import git_revision
from hierarchy.trajectory import Trajectory

REPOSITORY = Path(__file__).resolve().parents[1]
EXAMPLES = REPOSITORY / "examples"

SMALL_CONFIG = """
[problem]
d = 200
a = 1.5
b = 0.0
sigma0 = 0.1
seed = 1

[truncation]
kind = "spectral_modes"
bins_per_decade = 6
rule_order = 4
exact_top = 8
exact_bottom = 4

[solver]
t_first = 1e-2
t_end = 1e5
n_out = 80
rtol = 1e-9
atol = 1e-13
"""


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """Run the small configuration once and return its output directory, exit code, stdout and stderr."""
    directory = tmp_path_factory.mktemp("small_run")
    config = directory / "small.toml"
    config.write_text(SMALL_CONFIG, encoding="utf-8")
    out = directory / "out"

    with pytest.MonkeyPatch.context() as patch:
        stdout_path = directory / "stdout.txt"
        stderr_path = directory / "stderr.txt"
        with stdout_path.open("w") as stdout, stderr_path.open("w") as stderr:
            patch.setattr(sys, "stdout", stdout)
            patch.setattr(sys, "stderr", stderr)
            exit_code = main(["run", str(config), "--out", str(out)])
    return out, exit_code, stdout_path.read_text(), stderr_path.read_text()


def test_run_exit_code_success(small_run):
    _, exit_code, _, _ = small_run

    assert exit_code == 0


def test_run_writes_files(small_run):
    out, _, _, _ = small_run

    for name in ("trajectory.csv", "summary.json", "trajectory.png"):
        assert (out / name).is_file(), name
    assert (out / "trajectory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_csv_header_and_rows(small_run):
    out, _, _, _ = small_run
    lines = (out / "trajectory.csv").read_text().splitlines()

    assert lines[0].startswith("t,loss,m1,q1")
    assert lines[0].split(",")[:4] == ["t", "loss", "m1", "q1"]
    assert len(lines) == 1 + 80

    columns = read_trajectory_csv(out / "trajectory.csv")
    np.testing.assert_allclose(columns["t"], np.geomspace(1e-2, 1e5, 80), rtol=1e-15)
    assert abs(columns["m1"][-1]) == pytest.approx(1.0, abs=1e-2)
    assert columns["loss_tail_prediction"].shape == (80,)


def _write_config(tmp_path, text=SMALL_CONFIG, name="small.toml"):
    config = tmp_path / name
    config.write_text(text, encoding="utf-8")
    return config


def test_run_estimates_truncation_error(small_run):
    out, _, stdout, _ = small_run
    estimate = json.loads((out / "summary.json").read_text())["truncation_error_estimate"]
    # The finer rule has 12 bins per decade and 6 nodes per bin.
    assert estimate["reference_equations"] > json.loads((out / "summary.json").read_text())["state_size"]
    assert estimate["reference_status"] == "SUCCESS"
    assert 0.0 < estimate["max_relative_difference_loss"] < 1e-2
    assert 0.0 <= estimate["max_relative_difference_q1"] < 1e-4
    assert "finer rule, spectral modes (K = " in stdout


def test_run_error_estimate_matches_exact_flow(tmp_path):
    """The estimate is of the size of the spectral modes' actual error against the exact flow."""
    config = _write_config(tmp_path)
    assert main(["run", str(config), "--out", str(tmp_path / "modes"), "--quiet"]) == 0
    exact_config = _write_config(tmp_path, SMALL_CONFIG.replace('kind = "spectral_modes"', 'kind = "exact"'), "exact.toml")
    assert main(["run", str(exact_config), "--out", str(tmp_path / "exact"), "--quiet"]) == 0
    modes = read_trajectory_csv(tmp_path / "modes" / "trajectory.csv")
    exact = read_trajectory_csv(tmp_path / "exact" / "trajectory.csv")
    floor = 1e-8 * exact["loss"][0]
    compared = exact["loss"] >= floor
    actual = np.max(np.abs(modes["loss"][compared] / exact["loss"][compared] - 1.0))
    estimate = json.loads((tmp_path / "modes" / "summary.json").read_text())["truncation_error_estimate"]
    assert actual / 10 < estimate["max_relative_difference_loss"] < 10 * actual
    assert "truncation_error_estimate" not in json.loads((tmp_path / "exact" / "summary.json").read_text())


def test_run_without_error_estimate(tmp_path, capsys):
    config = _write_config(tmp_path)
    assert main(["run", str(config), "--out", str(tmp_path / "out"), "--quiet", "--no-error-estimate"]) == 0
    assert "truncation_error_estimate" not in json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "finer rule" not in capsys.readouterr().out


def test_run_summary_json(small_run):
    out, _, _, _ = small_run
    summary = json.loads((out / "summary.json").read_text())

    assert summary["status"] == "SUCCESS"
    assert summary["config"]["problem"]["d"] == 200
    assert summary["problem"]["d"] == 200
    assert summary["state_size"] > 0
    assert summary["stats"]["steps"] > 0
    assert summary["wall_seconds"] >= 0.0
    assert summary["package_version"] not in ("", None)
    assert summary["git_revision"] == git_revision()
    phases = summary["phases"]
    assert phases["escape_time"] > 0.0
    assert phases["escape_time_predicted"] > 0.0
    assert phases["convergence_time"] > phases["escape_time"]
    assert len(phases["tail_comparison"]) >= 2


def test_run_prints_summary_and_logs(small_run):
    _, _, stdout, stderr = small_run

    assert "escape time" in stdout
    assert "convergence time" in stdout
    assert "relative error" in stdout
    assert "phase-3 loss" in stdout
    assert "SUCCESS" in stdout
    assert "INFO hierarchy.integrators" in stderr


def test_zero_closure_reports_divergence(tmp_path, capsys):
    out = tmp_path / "zero"

    exit_code = main(["run", str(EXAMPLES / "moment_zero_closure.toml"), "--out", str(out), "--quiet"])

    captured = capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    columns = read_trajectory_csv(out / "trajectory.csv")
    assert exit_code == 1
    assert summary["status"] == "DIVERGED"
    assert summary["success"] is False
    assert 0 < columns["t"].size < 240
    assert (out / "trajectory.png").is_file()
    assert "DIVERGED" in captured.out
    assert "INFO" not in captured.err


def test_bad_config_exit_code(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text("[problem]\nd = -3\na = 1.5\n", encoding="utf-8")

    exit_code = main(["run", str(config), "--out", str(tmp_path / "out"), "--quiet"])

    captured = capsys.readouterr()
    assert exit_code == 2
    assert "problem.d = -3 is invalid" in captured.err
    assert "Traceback" not in captured.err
    assert not (tmp_path / "out").exists()


def test_missing_config_exit_code(tmp_path, capsys):
    exit_code = main(["run", str(tmp_path / "absent.toml"), "--out", str(tmp_path / "out")])

    assert exit_code == 2
    assert "config file not found" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "compare", "check", "simulate", "sweep"])
def test_empty_output_directory_rejected(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([command, str(EXAMPLES / "power_law.toml"), "--out", ""]) == 2
    assert "--out is empty" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_missing_arguments_exit_code(capsys):
    assert main(["run"]) == 2
    assert main([]) == 2
    assert "usage" in capsys.readouterr().err


def test_unwritable_output_exit_code(tmp_path, capsys):
    config = tmp_path / "small.toml"
    config.write_text(SMALL_CONFIG.replace("t_end = 1e5", "t_end = 1e1"), encoding="utf-8")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    exit_code = main(["run", str(config), "--out", str(blocker / "out"), "--quiet"])

    assert exit_code == 2
    assert "failed to write results" in capsys.readouterr().err


def test_python_module_entry_point(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[problem]\nd = 10\na = 1\nunknown = 1\n", encoding="utf-8")
    environment = dict(os.environ, PYTHONPATH=str(REPOSITORY) + os.pathsep + os.environ.get("PYTHONPATH", ""))

    completed = subprocess.run(
        [sys.executable, "-m", "hierarchy", "run", str(config), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=environment, timeout=300,
    )

    assert completed.returncode == 2
    assert "problem.unknown" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_csv_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(5)
    t = np.geomspace(1e-3, 1e9, 25)
    trajectory = Trajectory(
        t=t, m1=rng.standard_normal(25), q1=rng.random(25) * 1e-300, loss=np.append(rng.random(24), np.nan),
        rho1=1.0, rho2=0.5, truncation="test", state_size=2, status="SUCCESS", message="", t_requested_end=t[-1],
    )
    extra = np.full(25, np.pi)

    write_trajectory_csv(tmp_path / "trajectory.csv", trajectory, {"loss_tail_prediction": extra})
    columns = read_trajectory_csv(tmp_path / "trajectory.csv")

    assert list(columns) == ["t", "loss", "m1", "q1", "loss_tail_prediction"]
    assert np.array_equal(columns["t"], t)
    assert np.array_equal(columns["m1"], trajectory.m1)
    assert np.array_equal(columns["q1"], trajectory.q1)
    assert np.array_equal(columns["loss"], trajectory.loss, equal_nan=True)
    assert np.array_equal(columns["loss_tail_prediction"], extra)


def test_csv_reader_rejects_other_header(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("time,loss,m1,q1\n1,2,3,4\n")

    with pytest.raises(ValueError, match="does not start with t,loss,m1,q1"):
        read_trajectory_csv(path)


def test_run_without_outputs_writes_files(tmp_path, capsys):
    # A step budget of one step stops the run before the first output time.
    config = tmp_path / "budget.toml"
    config.write_text("[problem]\nd = 50\na = 1.5\n[solver]\nt_first = 1.0\nt_end = 10.0\nmax_steps = 1\n")
    out = tmp_path / "out"

    exit_code = main(["run", str(config), "--out", str(out), "--quiet"])

    summary = json.loads((out / "summary.json").read_text())
    columns = read_trajectory_csv(out / "trajectory.csv")
    assert exit_code == 1
    assert summary["status"] == "STEP_BUDGET"
    assert summary["outputs_reached"] == 0
    assert summary["phases"]["escape_time"] is None
    assert columns["t"].size == 0
    assert (out / "trajectory.png").is_file()
    assert "STEP_BUDGET" in capsys.readouterr().out


def test_sweep_command_runs_and_resumes(tmp_path):
    config = tmp_path / "sweep.toml"
    config.write_text(
        "[base.problem]\nd = 40\na = 1.0\n"
        "[base.truncation]\nkind = \"exact\"\n"
        "[base.solver]\nt_first = 0.1\nt_end = 100.0\nn_out = 20\n"
        "[sweep]\n\"problem.seed\" = [0, 1]\n"
    )
    out = tmp_path / "sweep"
    assert main(["sweep", str(config), "--out", str(out), "--workers", "1", "--quiet"]) == 0
    summary = (out / "summary.csv").read_text().splitlines()
    assert len(summary) == 3
    assert main(["sweep", str(config), "--out", str(out), "--workers", "1", "--quiet"]) == 0


def test_sweep_command_rejects_invalid_workers(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "missing.toml"), "--out", str(tmp_path), "--workers", "0"]) == 2
    assert "--workers = 0 is invalid" in capsys.readouterr().err


def test_simulate_command_writes_files(tmp_path):
    config = tmp_path / "sgd.toml"
    config.write_text(
        "[problem]\nd = 30\na = 1.0\n"
        "[training]\nmethod = \"sgd\"\neta = 0.01\nsteps = 2000\nseeds = [0, 1]\ntest_size = 100\nrecord_points = 20\n"
    )
    out = tmp_path / "out"
    assert main(["simulate", str(config), "--out", str(out), "--quiet"]) == 0
    header = (out / "simulation.csv").read_text().splitlines()[0]
    assert header.startswith("step,t,")
    assert (out / "simulation.png").is_file()


@pytest.mark.parametrize(
    "text, message",
    [
        ("[problem]\nd = 30\na = 1.0\n", "missing table [training]"),
        ("[problem]\nd = 30\na = 1.0\n[training]\nmethod = \"sgd\"\neta = -1.0\nsteps = 10\n", "training.eta = -1.0 is invalid"),
        ("[problem]\nd = inf\na = 1.5\ninit_teacher_scale = 0.001\n[training]\nmethod = \"sgd\"\neta = 0.1\nsteps = 10\n", "finite d"),
    ],
)
def test_simulate_command_rejects_bad_config(tmp_path, capsys, text, message):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    assert main(["simulate", str(config), "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err


def test_check_command_is_registered(tmp_path, capsys):
    assert main(["check", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "out")]) == 2
    assert "missing.toml" in capsys.readouterr().err


def test_run_on_measured_spectrum_compares_fitted_law(tmp_path, capsys):
    eigenvalues = tmp_path / "eigenvalues.txt"
    eigenvalues.write_text("\n".join(str(i ** -1.3) for i in range(1, 61)))
    config = tmp_path / "run.toml"
    config.write_text(
        '[problem]\nspectrum = "file"\nspectrum_file = "eigenvalues.txt"\nfit_first = 1\n'
        '[truncation]\nkind = "exact"\n[solver]\nt_first = 0.1\nt_end = 1e4\nn_out = 40\n'
    )
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "power-law fit: a = 1.3000" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["spectrum_comparison"]["fit"]["a"] == pytest.approx(1.3, rel=1e-9)
    # The fitted law of an exact power law is the same spectrum, so the escape times agree.
    measured = summary["spectrum_comparison"]["measured_spectrum"]["escape_time"]
    fitted = summary["spectrum_comparison"]["fitted_power_law"]["escape_time"]
    assert fitted == pytest.approx(measured, rel=1e-6)
    assert (out / "spectrum.png").is_file()


def test_simulate_rejects_other_models(tmp_path, capsys):
    config = tmp_path / "sgd.toml"
    config.write_text(
        "[problem]\nd = 30\na = 1.0\n[training]\nmethod = \"sgd\"\neta = 0.01\nsteps = 10\n"
        "[model]\nstudent = \"tanh(z)\"\n"
    )
    assert main(["simulate", str(config), "--out", str(tmp_path / "out")]) == 2
    assert "phase-retrieval gradient only" in capsys.readouterr().err


def test_run_reports_finer_rule_that_cannot_be_built(tmp_path, monkeypatch, capsys):
    import hierarchy.truncation_error as truncation_error

    def reject(problem, model, truncation, solver):
        raise ValueError("the rule is finer than the spectrum")

    monkeypatch.setattr(truncation_error, "integrate_problem", reject)
    config = _write_config(tmp_path)
    assert main(["run", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "stopped with NOT BUILT (the rule is finer than the spectrum), no error estimate" in capsys.readouterr().out
    estimate = json.loads((tmp_path / "out" / "summary.json").read_text())["truncation_error_estimate"]
    assert estimate["max_relative_difference_loss"] is None
