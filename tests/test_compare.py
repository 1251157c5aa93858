"""Tests of ``hierarchy compare``: its configuration, the measured errors and the command."""

import csv
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest

from hierarchy.cli import main
from hierarchy.compare import CSV_COLUMNS, Comparison, ComparisonRow, draw_comparison, measure_errors, run_comparison
from hierarchy.rule_selection import LOSS_FLOOR_FRACTION
from hierarchy.config import CompareOptions, ConfigError, load_compare_config, load_config, parse_compare_config
from hierarchy.trajectory import Trajectory
from hierarchy.truncation import build_spectral_rule

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# ``solve`` reports divergence once some |y_i| exceeds this bound (its default max_abs_state).
DIVERGENCE_BOUND = 1e100
# With L = 1/4 (3 q_1^2 - 2 q_1 rho_1 - 4 m_1^2 + 3 rho_1^2) near L = 1e-12, rounding alone gives
# relative loss errors of order 1e-15 / 1e-12, so refining a rule stops lowering the loss error there.
LOSS_ROUNDING_LEVEL = 2e-3

# The problem of examples/compare_power_law.toml with tighter tolerances, so that the
# spectral-mode errors in m_1 and q_1 keep falling down to the finest rule instead of
# levelling off at the integration error near 1e-7.
POWER_LAW_CONFIG = """
[problem]
d = 500
a = 1.5
b = 0.0
sigma0 = 0.1
seed = 0

[solver]
t_first = 0.1
t_end = 1e5
n_out = 120
rtol = 1e-10
atol = 1e-14

[compare]
moment_orders = [1]
closures = ["zero", "copy", "ratio"]
"""

SMALL_CONFIG = """
[problem]
d = 100
a = 1.5
seed = 3

[solver]
t_first = 0.1
t_end = 1e3
n_out = 40

[compare]
spectral_rules = [[2, 3], [4, 5]]
moment_orders = [1, 2]
closures = ["zero", "quadrature"]
max_steps = 20000
"""

INFINITE_CONFIG = """
[problem]
d = inf
a = 1.5
b = 0.0
sigma0 = 0.1
init_teacher_scale = 1e-3

[solver]
t_first = 0.1
t_end = 1e4
n_out = 40

[compare]
spectral_rules = [[2, 3], [4, 5]]
moment_orders = [2]
closures = ["quadrature"]
"""


def _parse(text):
    return parse_compare_config(tomllib.loads(text), source="test.toml")


def _config_error(text):
    with pytest.raises(ConfigError) as raised:
        _parse(text)
    return str(raised.value)


def _row(comparison, kind, closure, K=None):
    matches = [
        row for row in comparison.rows
        if row.kind == kind and row.closure == closure and (K is None or row.K == K)
    ]
    assert len(matches) == 1, f"expected one {kind} {closure} row with K = {K}, found {len(matches)}"
    return matches[0]


@pytest.fixture(scope="module")
def power_law_comparison():
    return run_comparison(_parse(POWER_LAW_CONFIG))


def test_config_defaults_for_finite_d():
    config = _parse("[problem]\nd = 500\na = 1.5\n")

    assert config.compare == CompareOptions(reference="exact")
    assert config.compare.spectral_rules == ((2, 3), (3, 4), (4, 5), (6, 6), (8, 7))
    assert config.compare.exact_top == 8
    assert config.compare.moment_orders == (1, 2, 4, 8)
    assert config.compare.closures == ("zero", "copy", "ratio", "quadrature")
    assert config.compare.max_steps == 200_000
    assert config.compare.max_wall_seconds == 60.0


def test_config_defaults_to_finest_rule_for_infinite_d():
    config = _parse(INFINITE_CONFIG)

    assert config.compare.reference == "finest_rule"
    assert config.compare.reference_bins_per_decade == 12
    assert config.compare.reference_rule_order == 8


def test_config_example_file():
    config = load_compare_config(EXAMPLES / "compare_power_law.toml")

    assert config.problem.d == 500
    assert config.problem.a == 1.5
    assert config.problem.b == 0.0
    assert config.problem.sigma0 == 0.1
    assert config.problem.seed == 0
    assert config.solver.t_first == 0.1
    assert config.solver.t_end == 1e5
    assert config.solver.rtol == 1e-8
    assert config.compare.reference == "exact"


@pytest.mark.parametrize(
    "compare_table, expected",
    [
        ("unknown = 1", "unknown key compare.unknown"),
        ("spectral_rules = [[2, 3], [4]]", "compare.spectral_rules = [[2, 3], [4]] (list) is invalid"),
        ("spectral_rules = [[2, 3], [0, 4]]", "compare.spectral_rules = [[2, 3], [0, 4]] is invalid: the rule [0, 4]"),
        ("spectral_rules = [[2, 3], [2, 3]]", "[2, 3] is listed twice"),
        ("spectral_rules = [[100000, 6]]", "the rule [100000, 6] must be a pair [bins_per_decade, rule_order] of integers, "
         "bins_per_decade in [1, 1000] and rule_order in [1, 32]"),
        ("reference = \"finest_rule\"\nreference_rule_order = 1000",
         "compare.reference_rule_order = 1000 is invalid: it must be an integer in [1, 32]"),
        ("spectral_rules = 3", "compare.spectral_rules = 3 (int) is invalid: expected a list"),
        ("moment_orders = [1, 2.5]", "compare.moment_orders = [1, 2.5] (list) is invalid: expected a list of integers"),
        ("moment_orders = [0, 2]", "compare.moment_orders = [0, 2] is invalid: the order 0"),
        ("closures = [\"zero\", \"linear\"]", "'linear' is not a closure"),
        ("closures = [\"zero\", \"zero\"]", "'zero' is listed twice"),
        ("spectral_rules = []\nmoment_orders = []", "there is nothing to compare"),
        ("exact_top = -1", "compare.exact_top = -1 is invalid"),
        ("reference = \"best\"", "compare.reference = 'best' is invalid"),
        ("reference_rule_order = 4", "compare.reference_rule_order is set but the reference is the exact flow"),
        ("max_steps = 0", "compare.max_steps = 0 is invalid"),
        ("max_wall_seconds = 0", "compare.max_wall_seconds = 0.0 is invalid"),
        ("max_wall_seconds = \"long\"", "compare.max_wall_seconds = 'long' (str) is invalid: expected a number"),
    ],
)
def test_config_error_names_key(compare_table, expected):
    message = _config_error(f"[problem]\nd = 500\na = 1.5\n[compare]\n{compare_table}\n")

    assert expected in message
    assert message.startswith("test.toml: ")


def test_config_rejects_truncation_table():
    message = _config_error("[problem]\nd = 500\na = 1.5\n[truncation]\nkind = \"exact\"\n")

    assert "unknown table [truncation]" in message
    assert "[compare]" in message


def test_config_rejects_exact_reference_for_infinite_d():
    message = _config_error(INFINITE_CONFIG + "reference = \"exact\"\n")

    assert 'compare.reference = "exact" is invalid for d = inf' in message


def test_config_problem_errors_still_named():
    message = _config_error("[problem]\nd = -3\na = 1.5\n")

    assert "problem.d = -3 is invalid" in message


def test_run_config_rejects_compare_table(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[problem]\nd = 500\na = 1.5\n[compare]\nexact_top = 4\n", encoding="utf-8")

    with pytest.raises(ConfigError, match=r"unknown table \[compare\]"):
        load_config(path)


def _trajectory(t, loss, m1, q1):
    return Trajectory(
        t=np.asarray(t, dtype=float), m1=np.asarray(m1, dtype=float), q1=np.asarray(q1, dtype=float),
        loss=np.asarray(loss, dtype=float), rho1=1.0, rho2=0.5, truncation="test", state_size=2,
        status="SUCCESS", message="", t_requested_end=float(t[-1]),
    )


def test_errors_skip_loss_below_floor():
    t = [1.0, 2.0, 3.0, 4.0]
    reference = _trajectory(t, loss=[0.5, 0.1, 1e-3, 1e-14], m1=[0.1, 0.5, 0.9, 1.0], q1=[0.2, 0.6, 0.9, 1.0])
    # The last loss is 100 times the reference's, but the reference is below the floor there.
    trajectory = _trajectory(t, loss=[0.5, 0.1, 1.02e-3, 1e-12], m1=[0.1, 0.5, 0.9, 1.0], q1=[0.2, 0.6, 0.9, 1.0])

    errors = measure_errors(trajectory, reference, loss_floor=1e-12)

    assert errors.loss == pytest.approx(0.02)
    assert errors.t_loss_within_1_percent == 2.0


def test_errors_compare_absolute_overlap():
    t = [1.0, 2.0]
    reference = _trajectory(t, loss=[0.5, 0.1], m1=[0.5, 1.0], q1=[0.5, 1.0])
    trajectory = _trajectory(t, loss=[0.5, 0.1], m1=[-0.5, -1.1], q1=[0.5, 1.0])

    errors = measure_errors(trajectory, reference, loss_floor=1e-12)

    assert errors.m1 == pytest.approx(0.1)
    assert errors.q1 == 0.0
    assert errors.loss == 0.0
    assert errors.t_loss_within_1_percent == 2.0


def test_errors_of_truncated_run_use_reached_times():
    t = [1.0, 2.0, 3.0]
    reference = _trajectory(t, loss=[0.5, 0.4, 0.3], m1=[0.5, 0.6, 0.7], q1=[0.5, 0.6, 0.7])
    stopped = _trajectory(t[:2], loss=[0.6, np.nan], m1=[0.5, np.inf], q1=[0.5, 0.6])

    errors = measure_errors(stopped, reference, loss_floor=1e-12)

    assert errors.loss == math.inf
    assert errors.m1 == math.inf
    assert errors.q1 == 0.0
    assert errors.t_loss_within_1_percent is None


def test_errors_reject_other_grid():
    reference = _trajectory([1.0, 2.0], loss=[0.5, 0.4], m1=[0.5, 0.6], q1=[0.5, 0.6])
    other = _trajectory([1.5], loss=[0.5], m1=[0.5], q1=[0.5])

    with pytest.raises(ValueError, match="share the output grid"):
        measure_errors(other, reference, loss_floor=1e-12)


# Rows of `hierarchy compare examples/compare_power_law.toml`: (closure or rule, K, loss error, status).
# Without stacking, the labels of the zero and the ratio closure at K = 4 overlap.
EXAMPLE_ROWS = (
    ("2 x 3", 28, 5.688e-02, "SUCCESS"),
    ("8 x 7", 136, 1.756e-06, "SUCCESS"),
    ("zero", 1, 7.857e191, "DIVERGED"),
    ("zero", 2, 6.289e11, "STEP_BUDGET"),
    ("zero", 4, 9.135e04, "STEP_SIZE_COLLAPSE"),
    ("zero", 8, 4.585e22, "STEP_BUDGET"),
    ("copy", 1, 2.488e07, "SUCCESS"),
    ("copy", 2, 1.904e23, "STEP_BUDGET"),
    ("copy", 4, 1.114e18, "STEP_BUDGET"),
    ("copy", 8, 7.472e18, "STEP_BUDGET"),
    ("ratio", 2, 2.230e07, "SUCCESS"),
    ("ratio", 4, 1.151e07, "STEP_BUDGET"),
    ("ratio", 8, 2.134e13, "STEP_SIZE_COLLAPSE"),
    ("quadrature", 4, 5.825e01, "SUCCESS"),
)

# Four closures that all stop at K = 4 with almost the same error, so their labels start on top of each other.
COINCIDENT_ROWS = (
    ("zero", 4, 1.00e5, "STEP_BUDGET"),
    ("copy", 4, 1.05e5, "STEP_BUDGET"),
    ("ratio", 4, 1.10e5, "STEP_SIZE_COLLAPSE"),
    ("quadrature", 4, 1.02e5, "DIVERGED"),
    ("zero", 8, math.inf, "DIVERGED"),
    ("copy", 8, math.inf, "DIVERGED"),
)


def _plotted_comparison(rows):
    t = np.array([0.1, 1.0, 10.0, 100.0])
    reference = _trajectory(t, loss=[0.75, 0.7, 0.1, 1e-3], m1=[0.01, 0.05, 0.9, 1.0], q1=[0.01, 0.05, 0.9, 1.0])
    comparison_rows = []
    for closure, K, loss_error, status in rows:
        kind = "spectral_modes" if " x " in closure else "moments"
        reached = 4 if status == "SUCCESS" else 3
        trajectory = _trajectory(t[:reached], loss=[0.75, 0.7, 0.2, 1e-3][:reached], m1=[0.01] * reached, q1=[0.01] * reached)
        trajectory.status = status
        comparison_rows.append(ComparisonRow(
            kind=kind, closure=closure, K=K, state_size=2 * K, loss_error=loss_error, m1_error=1.0, q1_error=1.0,
            t_loss_within_1_percent=None, t_last_output=float(t[reached - 1]), t_stopped=float(t[reached - 1]),
            m1_final=0.01, wall_seconds=0.1, status=status, message="test", trajectory=trajectory,
        ))
    return Comparison(
        reference=reference, reference_kind="exact", reference_label="exact flow (d = 500)",
        reference_wall_seconds=0.1, rows=comparison_rows, initial_loss=0.75, loss_floor=7.5e-9, loss_ignored=0,
        t_loss_ignored_first=None, problem_description={"d": 500, "a": 1.5},
    )


@pytest.mark.parametrize("rows", [EXAMPLE_ROWS, COINCIDENT_ROWS], ids=["example", "coincident"])
def test_plot_labels_do_not_overlap(rows):
    figure = draw_comparison(_plotted_comparison(rows))
    figure.draw_without_rendering()
    renderer = figure.canvas.get_renderer()
    error_axes = figure.axes[0]
    labels = error_axes.texts
    boxes = [label.get_window_extent(renderer) for label in labels]

    failed = sum(1 for row in rows if row[3] != "SUCCESS")
    assert sorted(label.get_text() for label in labels) == sorted(row[3] for row in rows if row[3] != "SUCCESS")
    assert len(boxes) == failed
    for first in range(len(boxes)):
        assert figure.bbox.contains(boxes[first].x0, boxes[first].y0), labels[first].get_text()
        assert figure.bbox.contains(boxes[first].x1, boxes[first].y1), labels[first].get_text()
        for second in range(first + 1, len(boxes)):
            assert not boxes[first].overlaps(boxes[second]), (
                f"{labels[first].get_text()} at {boxes[first].bounds} overlaps "
                f"{labels[second].get_text()} at {boxes[second].bounds}"
            )


def test_reference_is_exact_flow(power_law_comparison):
    assert power_law_comparison.reference_kind == "exact"
    assert power_law_comparison.reference.truncation == "exact flow (d = 500)"
    assert power_law_comparison.reference.success


def test_loss_floor_ignores_late_times(power_law_comparison):
    comparison = power_law_comparison
    late = comparison.reference.t >= comparison.t_loss_ignored_first

    assert comparison.loss_floor == pytest.approx(LOSS_FLOOR_FRACTION * comparison.initial_loss)
    assert comparison.loss_ignored > 0
    assert np.all(comparison.reference.loss[late] < comparison.loss_floor)


def test_spectral_errors_fall_with_refinement(power_law_comparison):
    rows = [row for row in power_law_comparison.rows if row.kind == "spectral_modes"]

    assert [row.closure for row in rows] == ["2 x 3", "3 x 4", "4 x 5", "6 x 6", "8 x 7"]
    assert all(row.status == "SUCCESS" for row in rows)
    assert [row.K for row in rows] == sorted(row.K for row in rows)
    for coarse, fine in zip(rows, rows[1:]):
        assert fine.m1_error < coarse.m1_error, (coarse.closure, fine.closure)
        assert fine.q1_error < coarse.q1_error, (coarse.closure, fine.closure)
        assert fine.loss_error < coarse.loss_error or fine.loss_error < LOSS_ROUNDING_LEVEL, (coarse.closure, fine.closure)
    assert rows[-1].m1_error < 1e-5
    assert rows[-1].q1_error < 1e-5
    assert rows[0].loss_error > 10 * rows[-1].loss_error


def test_zero_closure_diverges_on_time(power_law_comparison):
    row = _row(power_law_comparison, "moments", "zero", K=1)
    description = power_law_comparison.problem_description
    # With m_2 = 0, dm_1/dt = 2 rho_2 m_1 exactly, so m_1 reaches the bound at this time.
    predicted = math.log(DIVERGENCE_BOUND / description["m1_initial"]) / (2.0 * description["rho2"])

    assert row.status == "DIVERGED"
    assert row.message.startswith("diverged at t = ")
    assert row.t_stopped == pytest.approx(predicted, rel=0.01)
    assert row.t_last_output < row.t_stopped


def test_copy_closure_sticks_below_one(power_law_comparison):
    row = _row(power_law_comparison, "moments", "copy", K=1)

    assert row.status == "SUCCESS"
    assert row.m1_final == pytest.approx(0.56, abs=0.01)
    assert row.m1_error > 0.3


def test_ratio_closure_at_order_one_is_skipped(power_law_comparison):
    row = _row(power_law_comparison, "moments", "ratio", K=1)

    assert row.status == "SKIPPED"
    assert "K >= 2" in row.message
    assert row.trajectory is None
    assert math.isnan(row.loss_error)


def test_infinite_d_uses_finest_rule_reference():
    config = _parse(INFINITE_CONFIG)
    comparison = run_comparison(config)
    finest_rule = build_spectral_rule(config.problem.build(), 12, 8, 8, t_end=1e4)
    coarse = _row(comparison, "spectral_modes", "2 x 3")
    fine = _row(comparison, "spectral_modes", "4 x 5")

    assert comparison.reference_kind == "finest_rule"
    assert comparison.reference.truncation == f"spectral modes (K = {finest_rule.size})"
    assert comparison.reference_label.endswith("rule 12 x 8")
    assert comparison.reference.success
    assert fine.m1_error < coarse.m1_error
    assert fine.m1_error < 1e-4
    assert _row(comparison, "moments", "quadrature", K=2).status == "SUCCESS"


def _run_command(tmp_path, capsys, text):
    config = tmp_path / "compare.toml"
    config.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    exit_code = main(["compare", str(config), "--out", str(out), "--quiet"])
    return exit_code, out, capsys.readouterr()


def test_command_writes_table_and_files(tmp_path, capsys):
    exit_code, out, captured = _run_command(tmp_path, capsys, SMALL_CONFIG)

    with (out / "compare.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert exit_code == 0
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [(row[0], row[1]) for row in rows[1:]] == [
        ("spectral_modes", "2 x 3"),
        ("spectral_modes", "4 x 5"),
        ("moments", "zero"),
        ("moments", "zero"),
        ("moments", "quadrature"),
        ("moments", "quadrature"),
    ]
    assert [row[2] for row in rows[3:]] == ["1", "2", "1", "2"]
    assert rows[3][CSV_COLUMNS.index("status")] == "DIVERGED"
    assert float(rows[1][4]) > 0.0
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "exact flow (d = 100)" in captured.out
    assert "DIVERGED: diverged at t = " in captured.out
    assert "quadrature" in captured.out
    assert "INFO" not in captured.err


def test_command_reference_failure_exit_code(tmp_path, capsys):
    text = SMALL_CONFIG.replace("n_out = 40", "n_out = 40\nmax_steps = 1")

    exit_code, out, captured = _run_command(tmp_path, capsys, text)

    lines = (out / "compare.csv").read_text().splitlines()
    assert exit_code == 1
    assert lines == [",".join(CSV_COLUMNS)]
    assert (out / "compare.png").is_file()
    assert "the reference failed" in captured.out


def test_command_bad_config_exit_code(tmp_path, capsys):
    exit_code, out, captured = _run_command(tmp_path, capsys, SMALL_CONFIG + "bins = 3\n")

    assert exit_code == 2
    assert "unknown key compare.bins" in captured.err
    assert "Traceback" not in captured.err
    assert not out.exists()
