"""Command line: ``hierarchy run CONFIG.toml --out DIR [--quiet]`` and ``hierarchy compare``.

The run reads the configuration, builds the problem, integrates the chosen
truncation of the phase-retrieval flow, measures the phases and writes
``trajectory.csv``, ``summary.json`` and ``trajectory.png`` to ``DIR``. A
short summary goes to stdout and the integrator's progress (INFO log) to
stderr.

Exit codes: 0 when the integration reached ``t_end``, 1 when it failed (the
files still hold what was computed), 2 on invalid input or when a file
cannot be written.

``hierarchy compare CONFIG.toml --out DIR [--quiet]`` integrates a reference
and every truncation listed in the ``[compare]`` table, prints a table of
their errors and writes ``compare.csv`` and ``compare.png`` to ``DIR``. Exit
codes: 0 when the reference reached ``t_end`` (failed truncations are part of
the result), 1 when the reference failed, 2 as for ``run``.
"""

import argparse
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .check import configure_check_parser, run_check_command
from .compare import format_comparison, run_comparison, write_comparison
from .config import ConfigError, RunConfig, load_compare_config, load_config, load_simulate_config
from .io import write_run
from .phases import PhaseReport, analyze_phases, predict_tail_loss
from .pipeline import integrate_problem
from .plots import PLOT_FILE, plot_run
from .provenance import package_version
from .simulation import run_simulation
from .spectrum import EmpiricalSpec, Problem
from .spectrum_comparison import (
    SPECTRUM_PLOT_FILE,
    compare_with_fitted_power_law,
    format_spectrum_comparison,
    plot_spectrum_comparison,
)
from .sweeps import SweepRunError, SweepStoreError, default_local_workers, max_local_workers, run_sweep
from .trajectory import Trajectory
from .truncation_error import estimate_truncation_error

EXIT_SUCCESS = 0
EXIT_INTEGRATION_FAILED = 1
EXIT_INVALID_INPUT = 2

logger = logging.getLogger("hierarchy.cli")


class _InputError(Exception):
    """Invalid input found after parsing, reported on stderr with exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``hierarchy`` command."""
    parser = argparse.ArgumentParser(
        prog="hierarchy",
        description="Integrate the summary-statistic hierarchy of phase retrieval and report its phases.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="integrate one configuration and write its result files",
        description=(
            "Integrate the problem of CONFIG, write trajectory.csv, summary.json and trajectory.png to "
            "the output directory and print the measured and predicted phase times. Exit code 0 on "
            "success, 1 when the integration failed, 2 on invalid input."
        ),
    )
    run.add_argument("config", metavar="CONFIG.toml", help="TOML file with [problem], [truncation] and [solver] tables")
    run.add_argument("--out", required=True, metavar="DIR", help="output directory, created if missing")
    run.add_argument("--quiet", action="store_true", help="log only warnings and errors to stderr, not progress")
    run.add_argument(
        "--no-error-estimate", dest="error_estimate", action="store_false",
        help=(
            "skip the second integration on a finer spectral rule that estimates the truncation error "
            "(it costs about as much as the run itself or more)"
        ),
    )

    compare = commands.add_parser(
        "compare",
        help="run several truncations of one problem against a reference and tabulate their errors",
        description=(
            "Integrate a reference for the problem of CONFIG and every truncation listed in its [compare] "
            "table, print their maximum relative errors in L, |m_1| and q_1, and write compare.csv and "
            "compare.png to the output directory. Exit code 0 when the reference succeeded (failed "
            "truncations are part of the result), 1 when the reference failed, 2 on invalid input."
        ),
    )
    compare.add_argument("config", metavar="CONFIG.toml", help="TOML file with [problem], [solver] and [compare] tables")
    compare.add_argument("--out", required=True, metavar="DIR", help="output directory, created if missing")
    compare.add_argument("--quiet", action="store_true", help="log only warnings and errors to stderr, not progress")

    simulate = commands.add_parser(
        "simulate",
        help="train the model by GD or one-pass SGD on sampled data and overlay the ODE",
        description=(
            "Train phase retrieval on data x ~ N(0, Sigma) as the [training] table of CONFIG says (full-batch "
            "gradient descent on n samples or one-pass SGD), for each seed, integrate the exact-flow ODE at the "
            "same times t = eta * steps, and write simulation.csv and simulation.png to the output directory. "
            "Exit code 0 when every seed completed its steps and every flow integration reached the last time, "
            "1 when a seed diverged or reached training.max_wall_seconds or a flow integration failed (the files "
            "still hold what was computed), 2 on invalid input."
        ),
    )
    simulate.add_argument("config", metavar="CONFIG.toml", help="TOML file with [problem], [training] and [solver] tables")
    simulate.add_argument("--out", required=True, metavar="DIR", help="output directory, created if missing")
    simulate.add_argument("--quiet", action="store_true", help="log only warnings and errors, and draw no progress bar")

    check = commands.add_parser(
        "check",
        help="check the closed-form phase predictions on a grid of a, b and d",
        description=(
            "Integrate every case of the [check] grid of CONFIG (spectral modes; an adaptive rule for d = inf), "
            "measure escape time, convergence time, tail exponent and prefactor, print each against its "
            "closed-form prediction with the relative error, and write check.csv and figures to the output "
            "directory. Exit code 0 when every integration reached t_end, 1 when one failed, 2 on invalid input."
        ),
    )
    configure_check_parser(check)

    sweep = commands.add_parser(
        "sweep",
        help="run a grid of configurations on Dask into a resumable results store",
        description=(
            "Expand the [sweep] table of CONFIG over its [base] configuration, run every point that is not yet "
            "stored in the output directory as one Dask task, and write one Zarr dataset per point plus "
            "summary.csv. Running the same command again after an interruption finishes the sweep without "
            "recomputing stored points. A directory that contains a different sweep is rejected. Exit code 0 when "
            "every point reached t_end, 1 when some point failed (its integration stopped early, as DIVERGED "
            "does, or its computation raised; every point and summary.csv are still written), 2 on invalid "
            "input, when the output directory contains another sweep or cannot be written, or when no scheduler "
            "could be reached."
        ),
    )
    sweep.add_argument("config", metavar="CONFIG.toml", help="TOML file with [base] and [sweep] tables")
    sweep.add_argument("--out", required=True, metavar="DIR", help="sweep directory, created if missing")
    sweep.add_argument(
        "--scheduler", metavar="ADDRESS", default=None,
        help="address of a running Dask scheduler, e.g. tcp://127.0.0.1:8786; by default a local cluster is started",
    )
    sweep.add_argument(
        "--workers", type=int, default=default_local_workers(), metavar="N",
        help=(
            f"worker processes of the local cluster, one thread each, from 1 to {max_local_workers()} "
            f"(the CPUs available); default {default_local_workers()}, ignored with --scheduler"
        ),
    )
    sweep.add_argument("--quiet", action="store_true", help="log only warnings and errors, and draw no progress bar")
    return parser


def _attach_log_handler(quiet: bool) -> tuple:
    """Send the package's log records to stderr and return what ``_detach_log_handler`` restores."""
    package_logger = logging.getLogger("hierarchy")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    previous_level = package_logger.level
    previous_propagate = package_logger.propagate
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.WARNING if quiet else logging.INFO)
    # The root logger would print a second copy, so records stop at this handler.
    package_logger.propagate = False
    return handler, previous_level, previous_propagate


def _detach_log_handler(state: tuple) -> None:
    handler, previous_level, previous_propagate = state
    package_logger = logging.getLogger("hierarchy")
    package_logger.removeHandler(handler)
    package_logger.setLevel(previous_level)
    package_logger.propagate = previous_propagate


def describe_parameters(spec) -> str:
    """Return the defining parameters of a problem spec on one line."""
    if isinstance(spec, EmpiricalSpec):
        head = f"spectrum {spec.source} (d = {spec.d})"
    else:
        head = f"d = {spec.d}, a = {spec.a:g}"
    tail = f"init_teacher_scale = {spec.init_teacher_scale:g}" if spec.infinite else f"seed = {spec.seed}"
    return f"{head}, b = {spec.b:g}, sigma0 = {spec.sigma0:g}, {tail}"


def describe_model(model) -> str:
    """Return a short name of the model for summaries and figure titles."""
    if getattr(model, "is_phase_retrieval", False):
        return "phase retrieval"
    student = getattr(model, "student", None)
    teacher = getattr(model, "teacher", None)
    if student is None or teacher is None:
        return str(getattr(model, "name", "model"))
    return f"single-index model, student {student}, teacher {teacher}"


def _format_optional(value, spec: str = ".4g", missing: str = "not reached") -> str:
    return missing if value is None else format(value, spec)


def format_summary(config: RunConfig, problem: Problem, trajectory: Trajectory, report: PhaseReport, files: list) -> str:
    """Return the human-readable summary of a run that ``hierarchy run`` prints."""
    description = problem.describe()
    stats = trajectory.stats
    lines = [
        f"model:       {describe_model(config.model)}",
        f"problem:     {describe_parameters(config.problem)}",
        f"             rho_1 = {description['rho1']:.6g}, rho_2 = {description['rho2']:.6g}, "
        f"m_1(0) = {description['m1_initial']:.4g}, q_1(0) = {description['q1_initial']:.4g}",
        f"truncation:  {trajectory.truncation}, {trajectory.state_size} equations",
        f"status:      {trajectory.status} ({trajectory.message})",
        f"steps:       {stats.get('steps', 0)} ({stats.get('accepted', 0)} accepted, {stats.get('rejected', 0)} rejected), "
        f"{stats.get('rhs_evaluations', 0)} right-hand sides, {stats.get('factorizations', 0)} factorizations, "
        f"{trajectory.wall_seconds:.3g} s",
        "",
    ]

    escape_line = f"escape time (|m_1|/rho_1 = {report.escape_level:g}): measured {_format_optional(report.escape_time)}"
    if not report.predictions_note:
        escape_line += (
            f", predicted {_format_optional(report.escape_time_predicted, missing='not available')} "
            "(leading order ln(m_esc/m_1(0))/(2 rho_2))"
        )
    if report.escape_time_relative_error is not None:
        escape_line += f", relative error {report.escape_time_relative_error:+.1%}"
    lines.append(escape_line)
    if report.escape_time_corrected is not None:
        corrected_line = (
            f"             corrected prediction {report.escape_time_corrected:.4g} "
            "(linear regime until q_1 = rho_1/3, then saturating growth at 2 rho_2)"
        )
        if report.escape_time_corrected_relative_error is not None:
            corrected_line += f", relative error {report.escape_time_corrected_relative_error:+.1%}"
        lines.append(corrected_line)
    if report.predictions_note:
        lines.append(f"note:        {report.predictions_note}")
    lines.append(
        f"convergence time (|m_1|/rho_1 and q_1/rho_1 within {report.convergence_tolerance:g} of 1): "
        f"{_format_optional(report.convergence_time)}"
    )
    if not trajectory.success:
        lines.append("  (the run stopped early, so these times describe only the outputs reached)")

    lines.append("")
    if report.tail_comparison:
        lines.append("phase-3 loss against rho_1 sum_i lam_i w*_i^2 exp(-4 rho_1 lam_i t):")
        lines.append(f"  {'t':>11}  {'measured':>12}  {'predicted':>12}  {'rel. error':>10}")
        for row in report.tail_comparison:
            lines.append(
                f"  {row.t:11.4g}  {row.measured_loss:12.5g}  {row.predicted_loss:12.5g}  {row.relative_error:+10.2%}"
            )
    elif report.predictions_note:
        lines.append("phase-3 loss: no prediction for this model (see the note above)")
    else:
        lines.append(
            "phase-3 loss: no comparison, because the statistics never converged or the loss was "
            f"already below {report.tail_loss_floor:.3g}"
        )

    lines.append("")
    lines.append("files:       " + ", ".join(str(path) for path in files))
    return "\n".join(lines)


def _run(config_path: str, out_directory: str, error_estimate: bool = True) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as error:
        raise _InputError(str(error)) from None

    logger.info("building problem %s", describe_parameters(config.problem))
    problem = config.problem.build()
    model = config.model
    try:
        trajectory = integrate_problem(problem, model, config.truncation, config.solver)
    except ValueError as error:
        # The truncation builders and the integrator check the few option
        # combinations that the configuration parser cannot.
        raise _InputError(f"{config_path}: {error}") from None

    # NumPy scalars overflow to inf on absurd spectra instead of raising OverflowError.
    initial_loss = float(model.loss(np.float64(problem.q(1)), np.float64(problem.m(1)), np.float64(problem.rho1)))
    covers = bool(getattr(model, "is_phase_retrieval", False))
    tail_prediction = predict_tail_loss(problem, trajectory.t) if covers else None
    report = analyze_phases(
        trajectory, problem, initial_loss=initial_loss, tail_prediction=tail_prediction, model=model
    )

    truncation_error = None
    if error_estimate and trajectory.success:
        truncation_error = estimate_truncation_error(
            problem, model, config.truncation, config.solver, trajectory, initial_loss
        )

    # A measured spectrum is set beside the pure power law fitted to it.
    spectrum_comparison = None
    spec = config.problem
    fit_points = (spec.d if getattr(spec, "fit_last", None) is None else spec.fit_last) - getattr(spec, "fit_first", 1) + 1
    if isinstance(spec, EmpiricalSpec) and fit_points < 3:
        logger.warning("no power-law fit: the fit range of %s holds %d eigenvalues, at least 3 are needed", spec.source, fit_points)
    elif isinstance(spec, EmpiricalSpec):
        logger.info("integrating the power law fitted to %s", config.problem.source)
        spectrum_comparison = compare_with_fitted_power_law(
            config.problem, model, config.truncation, config.solver, trajectory
        )

    out = Path(out_directory)
    try:
        extra = {} if spectrum_comparison is None else {"spectrum_comparison": spectrum_comparison.to_dict()}
        if truncation_error is not None:
            extra["truncation_error_estimate"] = truncation_error.to_dict()
        paths = write_run(out, config, problem, trajectory, report, tail_prediction, extra_summary=extra)
        plot_path = plot_run(
            out / PLOT_FILE, trajectory, report, problem.describe(), tail_prediction, model_name=describe_model(model)
        )
        files = [paths["trajectory"], paths["summary"], plot_path]
        if spectrum_comparison is not None:
            files.append(plot_spectrum_comparison(
                out / SPECTRUM_PLOT_FILE, spectrum_comparison, f"{config.problem.source} and its fitted power law"
            ))
    except OSError as error:
        raise _InputError(f"failed to write results to {out}: {error}") from None
    logger.info("wrote %s", ", ".join(str(path) for path in files))

    summary = format_summary(config, problem, trajectory, report, files)
    if truncation_error is not None:
        lines = summary.split("\n")
        position = next((index for index, line in enumerate(lines) if line.startswith("truncation:")), None)
        if position is not None:
            lines.insert(position + 1, f"             {truncation_error.describe()}")
        summary = "\n".join(lines)
    if spectrum_comparison is not None:
        head, _, tail = summary.rpartition("\nfiles:")
        summary = head + "\n\n" + "\n".join(format_spectrum_comparison(spectrum_comparison)) + "\n\nfiles:" + tail
    print(summary)
    return EXIT_SUCCESS if trajectory.success else EXIT_INTEGRATION_FAILED


def _compare(config_path: str, out_directory: str) -> int:
    try:
        config = load_compare_config(config_path)
    except ConfigError as error:
        raise _InputError(str(error)) from None

    try:
        comparison = run_comparison(config)
    except ValueError as error:
        # The builder rejected the reference's options. Compared truncations
        # that it rejects become skipped rows instead.
        raise _InputError(f"{config_path}: {error}") from None

    out = Path(out_directory)
    try:
        paths = write_comparison(out, comparison)
    except OSError as error:
        raise _InputError(f"failed to write results to {out}: {error}") from None
    logger.info("wrote %s and %s", paths["csv"], paths["plot"])

    print(format_comparison(comparison))
    print("")
    print(f"files:      {paths['csv']}, {paths['plot']}")
    return EXIT_SUCCESS if comparison.reference_succeeded else EXIT_INTEGRATION_FAILED


def _simulate(arguments) -> int:
    try:
        config = load_simulate_config(arguments.config)
    except ConfigError as error:
        raise _InputError(str(error)) from None

    settings = config.training
    total = settings.steps * len(settings.seeds)
    bar = None if arguments.quiet else tqdm(total=total, unit="step", unit_scale=True, desc="training", file=sys.stderr)
    done = {}

    def advance(seed, steps_done, steps_total):
        previous = done.get(seed, 0)
        done[seed] = steps_done
        bar.update(steps_done - previous)

    try:
        with warnings.catch_warnings(record=True) as caught:
            result = run_simulation(
                config.problem, settings, config.solver, arguments.out,
                workers=config.workers, progress=None if bar is None else advance,
            )
    except ValueError as error:
        raise _InputError(f"{arguments.config}: {error}") from None
    except OSError as error:
        raise _InputError(f"failed to write results to {arguments.out}: {error}") from None
    finally:
        if bar is not None:
            bar.close()
    _log_caught_warnings(caught)

    _print_simulation(config, result)
    return EXIT_SUCCESS if result.succeeded else EXIT_INTEGRATION_FAILED


def _log_caught_warnings(caught: list) -> None:
    """Log each distinct Python warning raised during a simulation once, as a warning of this package."""
    seen = set()
    for record in caught:
        key = (record.category, str(record.message), record.filename, record.lineno)
        if key in seen:
            continue
        seen.add(key)
        logger.warning(
            "%s from %s, line %d: %s. The values it affected may be inf or nan in the result files",
            record.category.__name__, record.filename, record.lineno, record.message,
        )


def _print_simulation(config, result) -> None:
    """Print the settings, how each seed's training and exact flow ended, and the loss against the flow."""
    settings = config.training
    problem = config.problem
    failures = result.ode_failures()
    flow_failure = {seed: (t_reached, trajectory) for seed, t_reached, trajectory in failures}

    print(
        f"problem:    d = {problem.d}, a = {problem.a:g}, b = {problem.b:g}, sigma0 = {problem.sigma0:g}, "
        "initial point drawn from each seed"
    )
    print(f"training:   {settings.method}, eta = {settings.eta:g}, {settings.steps} steps, {len(settings.seeds)} seeds, t = eta * steps")
    for seed, status, message in zip(result.training.seeds, result.training.status, result.training.messages):
        line = f"seed {seed}:     {status.value}; {message}"
        if seed in flow_failure:
            t_reached, trajectory = flow_failure[seed]
            line += f"; ODE {trajectory.status} after t = {t_reached:.4g}: {trajectory.message}"
        print(line)

    # Compare only at times where every seed's flow exists, and never at t = 0,
    # where training and flow share the initial point.
    t_compared = failures[0][1] if failures else result.t[-1]
    if failures:
        seed, t_reached, trajectory = failures[0]
        print(
            f"ODE:        the exact-flow overlay stopped early for {len(failures)} of {len(settings.seeds)} seeds, "
            f"first after t = {t_reached:.4g} of {result.t[-1]:.4g} (seed {seed}, {trajectory.status}: "
            f"{trajectory.message}); its columns are nan after that"
        )
    difference, difference_error = result.relative_loss_difference()
    compared = np.flatnonzero(np.isfinite(difference) & (result.t > 0.0) & (result.t <= t_compared))
    if compared.size:
        last = compared[-1]
        # The "g" format keeps the line short when a seed about to diverge makes the difference huge.
        print(
            f"loss vs ODE at t = {result.t[last]:.4g}: relative difference {100.0 * difference[last]:+.4g}% "
            f"± {100.0 * difference_error[last]:.3g}% (mean ± standard error over seeds)"
        )
        if settings.method == "sgd" and result.succeeded:
            print("            one-pass SGD differs from the ODE by a bias of order eta; halving eta should about halve it")
    elif failures:
        print(
            f"loss vs ODE: not compared, because the ODE overlay stopped after t = {t_compared:.4g}, "
            "before any recorded step with a training loss"
        )
    else:
        print("loss vs ODE: not compared, because no recorded step after step 0 has a finite training loss")
    files = getattr(result, "files", {}) or {}
    print("files:      " + ", ".join(str(path) for path in files.values()))


# Failed points listed after a sweep; summary.csv lists them all.
MAX_LISTED_SWEEP_FAILURES = 20


def _sweep(arguments) -> int:
    maximum = max_local_workers()
    if not 1 <= arguments.workers <= maximum:
        raise _InputError(
            f"--workers = {arguments.workers} is invalid: choose from 1 to {maximum}, "
            "the number of CPUs available to this process"
        )
    try:
        result = run_sweep(
            arguments.config, arguments.out, scheduler_address=arguments.scheduler,
            n_workers=arguments.workers, progress=not arguments.quiet,
        )
    except (ConfigError, SweepStoreError, SweepRunError) as error:
        raise _InputError(str(error)) from None

    statuses = {}
    for record in result.records:
        statuses[record.status] = statuses.get(record.status, 0) + 1
    print(f"sweep:      {len(result.records)} points, {result.computed} computed now, {result.reused} reused from the store")
    print("statuses:   " + ", ".join(f"{status} {count}" for status, count in sorted(statuses.items())))
    unsuccessful = result.unsuccessful
    for record in unsuccessful[:MAX_LISTED_SWEEP_FAILURES]:
        label = "error:" if record.failed else "failed:"
        print(f"{label:<12}point {record.index} ({record.point_id[:12]}): {record.status}: {record.message}")
    if len(unsuccessful) > MAX_LISTED_SWEEP_FAILURES:
        print(f"            and {len(unsuccessful) - MAX_LISTED_SWEEP_FAILURES} more failed points; see {result.summary_path}")
    print(f"files:      {result.summary_path}, {result.directory / 'points'}")
    return EXIT_SUCCESS if result.ok else EXIT_INTEGRATION_FAILED


def main(argv=None) -> int:
    """Run the ``hierarchy`` command with ``argv`` (``sys.argv[1:]`` by default) and return its exit code."""
    parser = build_parser()
    try:
        arguments = parser.parse_args(argv)
    except SystemExit as exit_request:
        # argparse exits after --help, --version (code 0) and on invalid arguments (code 2).
        return int(exit_request.code or 0)
    if getattr(arguments, "out", None) == "":
        # An empty path would put every file in the current directory.
        print("hierarchy: error: --out is empty; give the directory for the results", file=sys.stderr)
        return EXIT_INVALID_INPUT

    if arguments.command == "check":
        # The check command attaches and removes its own log handler.
        try:
            return run_check_command(arguments)
        except (MemoryError, RecursionError) as error:
            return _report_resource_error(error)

    log_state = _attach_log_handler(arguments.quiet)
    try:
        if arguments.command == "sweep":
            return _sweep(arguments)
        if arguments.command == "simulate":
            return _simulate(arguments)
        if arguments.command == "compare":
            return _compare(arguments.config, arguments.out)
        return _run(arguments.config, arguments.out, arguments.error_estimate)
    except _InputError as error:
        print(f"hierarchy: error: {error}", file=sys.stderr)
        return EXIT_INVALID_INPUT
    except (MemoryError, RecursionError) as error:
        return _report_resource_error(error)
    finally:
        _detach_log_handler(log_state)


def _report_resource_error(error: BaseException) -> int:
    """Print the message for an input too large or too deeply nested to process and return the exit code."""
    if isinstance(error, RecursionError):
        print("hierarchy: error: the input is nested too deeply to process", file=sys.stderr)
    else:
        print(
            "hierarchy: error: out of memory: the requested problem is too large for this machine; "
            "reduce d, the rule (bins_per_decade, rule_order), n_out or the number of seeds",
            file=sys.stderr,
        )
    return EXIT_INVALID_INPUT
