"""Benchmark this project's compiled integrators against SciPy and SUNDIALS CVODE.

    python benchmarks/run_benchmarks.py [--quick] [--out DIR] [--blas-threads N]

Measures, in one run: a work-precision sweep on the K ~ 600 spectral-mode
system, the K-mode systems for K from about 1e2 to 1e5 and the exact flow for
d from 1e3 to 1e5 (each from t = 0 to 1e7 at rtol = 1e-8), the time per
step of rodas4 against K, the first call in a fresh process, and a profile
of the rodas4 step. Writes ``results.csv``, ``REPORT.md`` and PNG plots to
``--out``. See ``benchmarks/README.md``.
"""

import argparse
import datetime
import json
import logging
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCHMARK_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCHMARK_DIR / "results"

# A size-sweep run is skipped when its estimated time exceeds the budget by this factor.
SKIP_MARGIN = 2.0
# In the size sweeps a peer's budget is at least this multiple of the CPU time of the
# slowest of this project's methods on the same system, so that a peer up to this
# many times slower than that method still finishes.
PEER_BUDGET_FACTOR = 3.0

RTOL = 1e-8
ATOL = 1e-12
REFERENCE_METHOD = "radau5"
REFERENCE_CHECK_METHOD = "rodas4"
REFERENCE_RTOL = 1e-12
REFERENCE_ATOL = 1e-16

logger = logging.getLogger("benchmarks")


@dataclass(frozen=True)
class Plan:
    """Sizes, tolerances and budgets of one benchmark mode."""

    name: str
    work_precision_rtols: tuple
    # The dense peers cost 5 to 30 s per run on the K ~ 600 system, so they get
    # a subset of the tolerances.
    dense_peer_rtols: tuple
    mode_bins_per_decade: tuple
    exact_dimensions: tuple
    peer_budget_seconds: float
    # Largest state size for the dense peers (from about 2000 equations they need more than 15 s of CPU time).
    dense_peer_max_size: int
    # Safety limit for one run of this project's methods (the longest measured run, the reference at K ~ 1e5, took 189 s).
    project_wall_limit_seconds: float


FULL = Plan(
    name="full",
    work_precision_rtols=(1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10),
    dense_peer_rtols=(1e-4, 1e-8),
    # K = 104, 992, 9428 and 99405 modes with the spectral rules of the package at the time of writing.
    mode_bins_per_decade=(2, 25, 320, 5400),
    exact_dimensions=(1000, 10000, 100000),
    peer_budget_seconds=15.0,
    dense_peer_max_size=8000,
    project_wall_limit_seconds=600.0,
)

QUICK = Plan(
    name="quick",
    work_precision_rtols=(1e-4, 1e-6, 1e-8, 1e-10),
    dense_peer_rtols=(1e-4, 1e-8),
    mode_bins_per_decade=(2, 25, 60),
    exact_dimensions=(1000, 10000),
    peer_budget_seconds=3.0,
    dense_peer_max_size=500,
    project_wall_limit_seconds=120.0,
)


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes, fewer tolerances and a budget of 3 s of CPU time per peer run (about 2 minutes)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"folder for results.csv, REPORT.md and the plots (default: {DEFAULT_OUT})")
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="threads of the BLAS/LAPACK used by the dense peers (default: 1, see README)")
    parser.add_argument("--skip-first-call", action="store_true",
                        help="do not time the first call in a fresh subprocess")
    return parser.parse_args(argv)


def limit_blas_threads(threads: int) -> None:
    """Set the thread count of OpenBLAS, MKL and OpenMP; effective only before NumPy is imported."""
    if threads < 1:
        raise SystemExit(f"--blas-threads = {threads} is invalid: it must be at least 1")
    for variable in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ[variable] = str(threads)


def load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "unknown"


def describe_machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}"


def run_size_case(case, section, plan, peer_names, estimator, records):
    """Run the reference, this project's methods and the peers at ``RTOL`` on one case of a size sweep."""
    import harness
    import peers

    difference = check_case(case)
    logger.info("%s: %s, n = %d, peer callbacks agree to %.1e", section, case.name, case.size, difference)
    reference = harness.run_project(case, REFERENCE_METHOD, REFERENCE_RTOL, REFERENCE_ATOL, section,
                                    kind="reference", max_wall_seconds=plan.project_wall_limit_seconds)
    records.append(reference)
    log_record(reference)

    from hierarchy.integrators import METHODS

    slowest_project_seconds = 0.0
    for method in METHODS:
        record = harness.run_project(case, method, RTOL, ATOL, section, max_wall_seconds=plan.project_wall_limit_seconds)
        harness.attach_errors(record, reference, case.rho1)
        records.append(record)
        log_record(record)
        slowest_project_seconds = max(slowest_project_seconds, record.cpu_seconds)
    budget = max(plan.peer_budget_seconds, PEER_BUDGET_FACTOR * slowest_project_seconds)

    for peer in peer_names:
        estimate, basis = estimator.estimate(peer, case.size)
        if peer in peers.DENSE_PEERS and case.size > plan.dense_peer_max_size:
            reason = (f"not attempted: n = {case.size} is above the {plan.name}-mode limit of {plan.dense_peer_max_size} "
                      f"for dense peers (one n x n Jacobian is {8 * case.size**2 / 1e9:.3g} GB)")
            record = harness.skipped(case, peer, "peer", RTOL, ATOL, section, reason, estimate)
        else:
            if math.isfinite(estimate) and estimate > SKIP_MARGIN * budget:
                reason = (f"not attempted: estimated CPU time is over {SKIP_MARGIN:g} x the "
                          f"{budget:.3g} s budget ({basis})")
                record = harness.skipped(case, peer, "peer", RTOL, ATOL, section, reason, estimate)
            else:
                record = harness.run_peer(case, peer, RTOL, ATOL, section, budget)
                estimator.record(peer, case.size, record)
        harness.attach_errors(record, reference, case.rho1)
        records.append(record)
        log_record(record)


def run_work_precision(plan, peer_names, records) -> str:
    """Run the work-precision sweep on the K ~ 600 system; return the line on the reference's agreement."""
    import harness
    import peers
    from cases import work_precision_case
    from hierarchy.integrators import METHODS

    section = "work-precision"
    case = work_precision_case()
    difference = check_case(case)
    logger.info("%s: %s, n = %d, peer callbacks agree to %.1e", section, case.name, case.size, difference)

    reference = harness.run_project(case, REFERENCE_METHOD, REFERENCE_RTOL, REFERENCE_ATOL, section, kind="reference")
    records.append(reference)
    log_record(reference)
    check = harness.run_project(case, REFERENCE_CHECK_METHOD, REFERENCE_RTOL, REFERENCE_ATOL, section,
                                kind="reference check")
    harness.attach_errors(check, reference, case.rho1)
    records.append(check)
    log_record(check)
    agreement = (
        f"Reference: {REFERENCE_METHOD} at rtol {REFERENCE_RTOL:g}, atol {REFERENCE_ATOL:g} "
        f"({reference.wall_seconds:.3g} s). {REFERENCE_CHECK_METHOD} at the same tolerances differs from it by "
        f"{check.max_rel_error:.2g} (max relative error of loss, m1, q1), a bound on the reference's own error "
        "as long as the two methods do not err alike."
    )

    # A peer that timed out or failed at a looser tolerance is not run at tighter ones.
    given_up = {}
    for rtol in plan.work_precision_rtols:
        for method in METHODS:
            record = harness.run_project(case, method, rtol, ATOL, section)
            harness.attach_errors(record, reference, case.rho1)
            records.append(record)
            log_record(record)
        for peer in peer_names:
            if peer in peers.DENSE_PEERS and rtol not in plan.dense_peer_rtols:
                continue
            if peer in peers.DENSE_PEERS and case.size > plan.dense_peer_max_size:
                reason = f"not attempted: n = {case.size} is above the {plan.name}-mode limit of {plan.dense_peer_max_size} for dense peers"
                record = harness.skipped(case, peer, "peer", rtol, ATOL, section, reason)
            elif peer in given_up:
                earlier = given_up[peer]
                reason = (f"not attempted: at the looser rtol {earlier.rtol:g} it {earlier.status} "
                          f"after {earlier.cpu_seconds:.3g} s of CPU time; a tighter rtol needs at least as long")
                record = harness.skipped(case, peer, "peer", rtol, ATOL, section, reason, earlier.cpu_seconds)
            else:
                record = harness.run_peer(case, peer, rtol, ATOL, section, plan.peer_budget_seconds)
                if record.status != "ok" or record.cpu_seconds > plan.peer_budget_seconds:
                    given_up[peer] = record
            harness.attach_errors(record, reference, case.rho1)
            records.append(record)
            log_record(record)
    return agreement


def check_case(case) -> float:
    """Check the peers' NumPy callbacks against the compiled ones; raise when they disagree."""
    from cases import check_peer_callbacks

    difference = check_peer_callbacks(case)
    if not difference < 1e-10:
        raise RuntimeError(f"{case.name}: the peer right-hand side or Jacobian differs from the compiled one "
                           f"by {difference:.3g} (relative); the comparison would be invalid")
    return difference


def log_record(record) -> None:
    logger.info(
        "  %-16s %-15s rtol %-6g %-9s wall %8.3f s  cpu %8.3f s  max rel. error %.2e  %s",
        record.method, record.kind, record.rtol, record.status, record.wall_seconds, record.cpu_seconds,
        record.max_rel_error,
        record.message if record.status != "ok" else "",
    )


def time_first_call(blas_threads: int) -> tuple:
    """Run ``first_call.py`` in a fresh process; return its timings and the cached kernel files found before."""
    import hierarchy

    package = Path(hierarchy.__file__).resolve().parent
    cached_files = sum(1 for _ in package.rglob("__pycache__/*.nbi"))
    environment = dict(os.environ)
    environment.update({name: str(blas_threads) for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")})
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, str(BENCHMARK_DIR / "first_call.py")],
        cwd=BENCHMARK_DIR, env=environment, capture_output=True, text=True, timeout=900, check=False,
    )
    process_seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"first_call.py failed with exit code {completed.returncode}: {completed.stderr[-2000:]}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    result["process_seconds"] = process_seconds
    return result, cached_files


def format_first_call(result, cached_files, main_import_seconds) -> str:
    lines = [
        f"System: {result['case']}, rtol 1e-8. Numba index files (`*.nbi`) in the package before the subprocess "
        f"started: {cached_files} (the cache is used as it is, never cleared). The import of `hierarchy` took "
        f"{result['import_seconds']:.2f} s in the subprocess and {main_import_seconds:.2f} s in the benchmark process "
        "(an import after a source change recompiles the kernels with explicit signatures). "
        f"The whole subprocess took {result['process_seconds']:.1f} s.",
        "",
        "| method | first call | second call | first − second |",
        "|---|---:|---:|---:|",
    ]
    for method, timing in result["calls"].items():
        lines.append(f"| {method} | {timing['first_seconds']:.3f} s | {timing['second_seconds']:.3f} s | "
                     f"{timing['first_seconds'] - timing['second_seconds']:.3f} s |")
    return "\n".join(lines)


def main(argv=None):
    arguments = parse_arguments(argv)
    limit_blas_threads(arguments.blas_threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    # The integrators log every run at INFO; the benchmark logs its own line per run.
    logging.getLogger("hierarchy").setLevel(logging.WARNING)
    plan = QUICK if arguments.quick else FULL
    started = time.perf_counter()
    load_start = load_average()

    import_started = time.perf_counter()
    import hierarchy  # noqa: F401  (timed: the first import may compile or load cached kernels)

    main_import_seconds = time.perf_counter() - import_started
    import numba
    import numpy as np
    import scipy

    import cases
    import harness
    import peers
    import report
    from hierarchy.integrators import METHODS, solve
    from profile_rodas4 import format_profile, profile_rodas4

    out = arguments.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    peer_names = peers.available_peers()
    if "cvode-dense" not in peer_names:
        logger.warning("scikit-sundae is not installed: the CVODE peers are left out (pip install 'scikit-sundae>=1.0')")
    logger.info("%s mode: methods %s, peers %s, results in %s", plan.name, ", ".join(METHODS), ", ".join(peer_names), out)

    first_call_text = "Not measured (--skip-first-call)."
    if not arguments.skip_first_call:
        logger.info("first call in a fresh process")
        first_call, cached_files = time_first_call(arguments.blas_threads)
        first_call_text = format_first_call(first_call, cached_files, main_import_seconds)

    # Warm up every method and peer on a small system so that no timed run pays for loading code.
    warm_case = cases.spectral_mode_case(2)
    for method in METHODS:
        solve(warm_case.system, cases.OUTPUT_TIMES[:5], method=method)
    for peer in peer_names:
        peers.run_peer(peer, warm_case.peer_problem, cases.OUTPUT_TIMES[:5], 1e-6, 1e-10, 60.0)

    records = []
    reference_check = run_work_precision(plan, peer_names, records)

    estimator = harness.CostEstimator()
    for bins in plan.mode_bins_per_decade:
        run_size_case(cases.spectral_mode_case(bins), "modes sweep", plan, peer_names, estimator, records)
    estimator = harness.CostEstimator()
    for d in plan.exact_dimensions:
        run_size_case(cases.exact_flow_case(d), "exact-flow sweep", plan, peer_names, estimator, records)

    logger.info("profiling the rodas4 step")
    profile_case = cases.work_precision_case()
    profile_text = format_profile(profile_rodas4(profile_case.system, cases.OUTPUT_TIMES, RTOL, ATOL))

    harness.fill_ratios(records)
    total_seconds = time.perf_counter() - started
    versions = {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
                "numba": numba.__version__, **peers.peer_versions()}
    command = "python benchmarks/run_benchmarks.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    context = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "command": command.strip(),
        "mode": plan.name,
        "total_seconds": total_seconds,
        "machine": describe_machine(),
        "load_start": load_start,
        "load_end": load_average(),
        "versions": ", ".join(f"{name} {version}" for name, version in versions.items()),
        "blas_threads": arguments.blas_threads,
        "output_times": f"{cases.OUTPUT_TIMES.size} log-spaced from {cases.OUTPUT_TIMES[0]:g} to {cases.OUTPUT_TIMES[-1]:g}",
        "atol": ATOL,
        "loss_floor": harness.LOSS_FLOOR,
        "reference": f"{REFERENCE_METHOD} at rtol {REFERENCE_RTOL:g}, atol {REFERENCE_ATOL:g} on the same system",
        "timing_rule": f"runs shorter than {harness.REPEAT_BELOW_SECONDS:g} s are repeated (at most "
                       f"{harness.MAX_REPEATS} runs) and the smallest wall time is kept; a peer run gets a budget of "
                       f"{plan.peer_budget_seconds:g} s of CPU time, in the size sweeps at least {PEER_BUDGET_FACTOR:g} x "
                       "the CPU time of this project's slowest method on the same system",
        "reference_check": reference_check,
        "first_call": first_call_text,
        "profile": profile_text,
    }

    report.write_csv(records, out / "results.csv")
    wp = [r for r in records if r.section == "work-precision"]
    report.plot_work_precision(wp, out / "work_precision.png", wp[0].case if wp else "")
    modes = [r for r in records if r.section == "modes sweep"]
    exact = [r for r in records if r.section == "exact-flow sweep"]
    report.plot_size_sweeps(modes, exact, out / "size_sweeps.png")
    report.plot_cost_per_step(modes, out / "cost_per_step.png")
    report.write_markdown(out / "REPORT.md", context, records)
    logger.info("done in %.0f s: %s", total_seconds, out / "REPORT.md")


if __name__ == "__main__":
    main()
