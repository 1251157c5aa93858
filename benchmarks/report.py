"""Write the results of a benchmark run: a CSV of every run, the Markdown report and the plots."""

import csv
import math
from pathlib import Path

import matplotlib

from peers import DENSE_PEERS

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SPEEDUP_TARGET = 100.0
# Allowed ratio of the growth of the rodas4 time per step to the growth of K.
PER_STEP_GROWTH_LIMIT = 2.0
EXACT_FLOW_TARGET_SECONDS = 10.0


def write_csv(records, path: Path) -> None:
    """Write one row per run (skipped runs included) to ``path``."""
    columns = records[0].csv_columns() if records else []
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for record in records:
            writer.writerow(record.csv_row())


def _number(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"


def _seconds(value) -> str:
    return _number(value, 3) + (" s" if value is not None and math.isfinite(value) else "")


def _ok(records):
    return [r for r in records if r.status == "ok"]


def equal_accuracy_speedups(section_records, clock="wall"):
    """Compare every successful peer run with this project's cheapest run of equal or better accuracy.

    Returns rows ``(peer run, project run or None, speed-up)`` in the time
    ``clock`` ("wall" or "cpu"). The project run is the fastest among all
    project methods and tolerances whose max relative error is at most the
    peer's, so the speed-up never credits this project with a less accurate
    result.
    """
    seconds = f"{clock}_seconds"
    project_runs = [r for r in _ok(section_records) if r.kind == "project" and math.isfinite(r.max_rel_error)]
    rows = []
    for peer_run in _ok(section_records):
        if peer_run.kind != "peer" or not math.isfinite(peer_run.max_rel_error):
            continue
        candidates = [r for r in project_runs if r.max_rel_error <= peer_run.max_rel_error]
        match = min(candidates, key=lambda r: getattr(r, seconds)) if candidates else None
        speedup = getattr(peer_run, seconds) / getattr(match, seconds) if match else math.nan
        rows.append((peer_run, match, speedup))
    return rows


def per_step_growth(mode_records, method="rodas4", clock="wall"):
    """Return ``(runs by K, time growth, K growth)`` of the time per step of ``method`` over the K sweep."""
    per_step = f"{clock}_seconds_per_step"
    runs = sorted((r for r in _ok(mode_records) if r.method == method and r.kind == "project"), key=lambda r: r.K)
    if len(runs) < 2:
        return runs, math.nan, math.nan
    return runs, getattr(runs[-1], per_step) / getattr(runs[0], per_step), runs[-1].K / runs[0].K


def _run_table(records, columns):
    header = "| " + " | ".join(title for title, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    lines = [header, rule]
    for record in records:
        lines.append("| " + " | ".join(render(record) for _, render in columns) + " |")
    return lines


RUN_COLUMNS = [
    ("method", lambda r: r.method),
    ("status", lambda r: r.status),
    ("wall", lambda r: _seconds(r.wall_seconds)),
    ("× fastest (wall)", lambda r: _ratio(r, r.ratio_to_fastest)),
    ("cpu", lambda r: _seconds(r.cpu_seconds)),
    ("× fastest (cpu)", lambda r: _ratio(r, r.cpu_ratio_to_fastest)),
    ("max rel. error", lambda r: _number(r.max_rel_error, 2)),
    ("loss", lambda r: _number(r.loss_rel_error, 2)),
    ("m1", lambda r: _number(r.m1_rel_error, 2)),
    ("q1", lambda r: _number(r.q1_rel_error, 2)),
    ("steps", lambda r: _number(r.steps)),
    ("f evals", lambda r: _number(r.rhs_evaluations)),
    ("note", lambda r: _note(r)),
]


def _ratio(record, value):
    # A run stopped by its budget would have taken longer, so its ratio is a lower bound.
    prefix = "≥ " if record.status == "timed out" and math.isfinite(value) else ""
    return prefix + _number(value)


def _note(record):
    if record.status == "skipped":
        estimate = f" (estimate: {record.estimated_seconds:.3g} s of CPU time)" if math.isfinite(record.estimated_seconds) else ""
        return record.message + estimate
    if record.status != "ok":
        return record.message
    return ""


def _case_tables(records):
    lines = []
    cases = []
    for record in records:
        if record.case not in cases:
            cases.append(record.case)
    for case in cases:
        rows = [r for r in records if r.case == case and r.kind in ("project", "peer")]
        reference = [r for r in records if r.case == case and r.kind == "reference"]
        lines.append(f"**{case}** (n = {rows[0].n if rows else reference[0].n} equations)")
        lines.append("")
        if reference:
            lines.append(f"Reference: {reference[0].method} at rtol {reference[0].rtol:g}, atol {reference[0].atol:g}, "
                         f"{reference[0].status}, {_seconds(reference[0].wall_seconds)}.")
            lines.append("")
        lines += _run_table(rows, RUN_COLUMNS)
        lines.append("")
    return lines


def plot_work_precision(records, path: Path, title: str) -> None:
    """Plot max relative error against wall time, log-log, one line per method."""
    figure, axes = plt.subplots(figsize=(7.5, 5.5))
    methods = []
    for record in records:
        if record.kind in ("project", "peer") and record.method not in methods:
            methods.append(record.method)
    for method in methods:
        runs = sorted((r for r in _ok(records) if r.method == method and r.kind in ("project", "peer")
                       and math.isfinite(r.max_rel_error)), key=lambda r: -r.rtol)
        if not runs:
            continue
        style = "-o" if runs[0].kind == "project" else "--s"
        axes.loglog([r.wall_seconds for r in runs], [r.max_rel_error for r in runs], style, label=method, markersize=4)
    axes.set_xlabel("wall time [s]")
    axes.set_ylabel("max relative error of loss, m1, q1")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_size_sweeps(mode_records, exact_records, path: Path) -> None:
    """Plot wall time against K (spectral modes) and d (exact flow), one line per method."""
    figure, panels = plt.subplots(1, 2, figsize=(12, 5))
    for axes, records, size_of, label in (
        (panels[0], mode_records, lambda r: r.K, "K (modes; 2K equations)"),
        (panels[1], exact_records, lambda r: r.d, "d (exact flow)"),
    ):
        methods = []
        for record in records:
            if record.kind in ("project", "peer") and record.method not in methods:
                methods.append(record.method)
        for method in methods:
            runs = sorted((r for r in _ok(records) if r.method == method and r.kind in ("project", "peer")), key=size_of)
            if runs:
                style = "-o" if runs[0].kind == "project" else "--s"
                axes.loglog([size_of(r) for r in runs], [r.wall_seconds for r in runs], style, label=method, markersize=4)
        axes.set_xlabel(label)
        axes.set_ylabel("wall time to t = 1e7 [s]")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_cost_per_step(mode_records, path: Path) -> None:
    """Plot the wall and CPU time per step of each project method against K, with a line proportional to K."""
    figure, axes = plt.subplots(figsize=(7, 5))
    for method, colour in (("rodas4", "C0"), ("radau5", "C1"), ("bdf", "C2"), ("exponential", "C3")):
        runs = sorted((r for r in _ok(mode_records) if r.method == method and r.kind == "project"), key=lambda r: r.K)
        if runs:
            axes.loglog([r.K for r in runs], [r.wall_seconds_per_step * 1e6 for r in runs], "-o", color=colour,
                        label=f"{method} (wall)", markersize=4)
            axes.loglog([r.K for r in runs], [r.cpu_seconds_per_step * 1e6 for r in runs], ":x", color=colour,
                        label=f"{method} (cpu)", markersize=4)
    rodas4, _, _ = per_step_growth(mode_records)
    if rodas4:
        first = rodas4[0]
        sizes = [first.K, rodas4[-1].K]
        axes.loglog(sizes, [first.wall_seconds_per_step * 1e6 * K / first.K for K in sizes], "k--",
                    label="∝ K (from rodas4 at the smallest K)")
    axes.set_xlabel("K (modes; 2K equations)")
    axes.set_ylabel("time per step [µs]")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _verdict(met):
    if met is None:
        return "not measured"
    return "met" if met else "NOT met"


def target_summary(wp_records, mode_records, exact_records):
    """Return the Markdown lines of the three targets with the measured values and verdicts.

    The verdicts use wall time, as the targets are stated; the CPU-time
    values follow in brackets because other processes share the cores.
    """
    lines = ["| target | measured (wall; cpu in brackets) | verdict |", "|---|---|---|"]

    rows = {clock: [row for row in equal_accuracy_speedups(wp_records, clock) if math.isfinite(row[2])]
            for clock in ("wall", "cpu")}
    if rows["wall"]:
        peer_run, match, speedup = min(rows["wall"], key=lambda row: row[2])
        cpu_speedup = min(row[2] for row in rows["cpu"])
        at_default = [row for row in rows["wall"] if row[0].rtol == 1e-8]
        default_text = ""
        dense = [row for row in rows["wall"] if row[0].method in DENSE_PEERS]
        if dense:
            dense_run, dense_match, dense_speedup = min(dense, key=lambda row: row[2])
            default_text += (f"; against the dense-Jacobian peers the smallest is {dense_speedup:.3g}× "
                             f"({dense_run.method} at rtol {dense_run.rtol:g}, error {_number(dense_run.max_rel_error, 2)})")
        if at_default:
            default_run, default_match, default_speedup = min(at_default, key=lambda row: row[2])
            default_text += f"; against the peers run at rtol 1e-8 the smallest is {default_speedup:.3g}× ({default_run.method})"
        lines.append(
            f"| K ≈ 600: ≥ {SPEEDUP_TARGET:g}× faster than the fastest peer at equal or better accuracy | "
            f"smallest speed-up over all peer runs {speedup:.3g}× [{cpu_speedup:.3g}×]: {peer_run.method} at rtol "
            f"{peer_run.rtol:g} ({_seconds(peer_run.wall_seconds)}, error {_number(peer_run.max_rel_error, 2)}) against "
            f"{match.method} at rtol {match.rtol:g} ({_seconds(match.wall_seconds)}, error "
            f"{_number(match.max_rel_error, 2)}){default_text} | {_verdict(speedup >= SPEEDUP_TARGET)} |"
        )
    else:
        lines.append(f"| K ≈ 600: ≥ {SPEEDUP_TARGET:g}× faster than the fastest peer | no comparable peer run | not measured |")

    runs, time_growth, size_growth = per_step_growth(mode_records)
    _, cpu_growth, _ = per_step_growth(mode_records, clock="cpu")
    if runs and math.isfinite(time_growth):
        ratio = time_growth / size_growth
        lines.append(
            f"| rodas4 time per step linear in K: its growth ≤ {PER_STEP_GROWTH_LIMIT:g}× the growth of K | "
            f"K {runs[0].K} → {runs[-1].K} (×{size_growth:.3g}): time per step "
            f"{runs[0].wall_seconds_per_step * 1e6:.3g} → {runs[-1].wall_seconds_per_step * 1e6:.3g} µs "
            f"(×{time_growth:.3g} [×{cpu_growth:.3g}]), growth ratio {ratio:.3g} [{cpu_growth / size_growth:.3g}] | "
            f"{_verdict(ratio <= PER_STEP_GROWTH_LIMIT)} |"
        )
    else:
        lines.append("| rodas4 time per step linear in K | fewer than two K measured | not measured |")

    project_runs = [r for r in _ok(exact_records) if r.kind == "project"]
    if project_runs:
        d_max = max(r.d for r in project_runs)
        best = min((r for r in project_runs if r.d == d_max), key=lambda r: r.wall_seconds)
        verdict = _verdict(best.wall_seconds < EXACT_FLOW_TARGET_SECONDS) if d_max >= 1e5 else "not measured (d < 1e5 in this mode)"
        lines.append(
            f"| exact flow at d = 1e5 to t = 1e7 in seconds (< {EXACT_FLOW_TARGET_SECONDS:g} s) | "
            f"d = {d_max:g}: fastest {best.method} {_seconds(best.wall_seconds)} [{_seconds(best.cpu_seconds)}], "
            f"max rel. error {_number(best.max_rel_error, 2)} | {verdict} |"
        )
    return lines


def speedup_table(wp_records):
    """Return the Markdown lines of the equal-accuracy comparison of every successful peer run."""
    lines = [
        "| peer | rtol | peer wall | peer error | project run of equal or better accuracy (wall) | its wall | its error "
        "| speed-up (wall) | speed-up (cpu) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    cpu_rows = {id(row[0]): row for row in equal_accuracy_speedups(wp_records, "cpu")}
    for peer_run, match, speedup in equal_accuracy_speedups(wp_records):
        match_text = f"{match.method} rtol {match.rtol:g}" if match else "none reached this accuracy"
        cpu_speedup = cpu_rows[id(peer_run)][2]
        lines.append(
            f"| {peer_run.method} | {peer_run.rtol:g} | {_seconds(peer_run.wall_seconds)} | "
            f"{_number(peer_run.max_rel_error, 2)} | {match_text} | {_seconds(match.wall_seconds if match else math.nan)} | "
            f"{_number(match.max_rel_error if match else math.nan, 2)} | {_number(speedup)}× | {_number(cpu_speedup)}× |"
        )
    return lines


def work_precision_table(wp_records):
    """Return a method × rtol table of wall time and max relative error."""
    rtols = sorted({r.rtol for r in wp_records if r.kind in ("project", "peer")}, reverse=True)
    methods = []
    for record in wp_records:
        if record.kind in ("project", "peer") and record.method not in methods:
            methods.append(record.method)
    lines = ["| method | " + " | ".join(f"rtol {rtol:g}" for rtol in rtols) + " |",
             "|---|" + "|".join("---:" for _ in rtols) + "|"]
    for method in methods:
        cells = []
        for rtol in rtols:
            matches = [r for r in wp_records if r.method == method and r.rtol == rtol and r.kind in ("project", "peer")]
            if not matches:
                cells.append("")
                continue
            record = matches[0]
            if record.status == "ok":
                cells.append(f"{_seconds(record.wall_seconds)} / {_number(record.max_rel_error, 2)}")
            elif record.status == "timed out":
                cells.append(f"timed out ({_seconds(record.wall_seconds)})")
            else:
                cells.append(record.status)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def per_step_table(mode_records):
    lines = ["| K | equations | method | steps | wall | µs per step (wall) | µs per step (cpu) | ns per step per equation (cpu) |",
             "|---:|---:|---|---:|---:|---:|---:|---:|"]
    runs = sorted((r for r in _ok(mode_records) if r.kind == "project"), key=lambda r: (r.K, r.method))
    for r in runs:
        lines.append(f"| {r.K} | {r.n} | {r.method} | {r.steps} | {_seconds(r.wall_seconds)} | "
                     f"{r.wall_seconds_per_step * 1e6:.4g} | {r.cpu_seconds_per_step * 1e6:.4g} | "
                     f"{r.cpu_seconds_per_step * 1e9 / r.n:.3g} |")
    return lines


def skip_list(records):
    lines = []
    for r in records:
        if r.status in ("skipped", "timed out", "failed"):
            note = _note(r)
            # A peer's timeout message already starts with its status.
            described = note if note.startswith(r.status) else f"{r.status}: {note}"
            lines.append(f"- {r.section}, {r.case}, {r.method} at rtol {r.rtol:g}: {described}")
    return lines or ["- none"]


def write_markdown(path: Path, context: dict, records) -> None:
    """Write the Markdown report: environment, targets, tables, profile and skipped runs."""
    wp = [r for r in records if r.section == "work-precision"]
    modes = [r for r in records if r.section == "modes sweep"]
    exact = [r for r in records if r.section == "exact-flow sweep"]

    lines = [
        "# Benchmark report",
        "",
        f"- Date: {context['date']}",
        f"- Command: `{context['command']}` ({context['mode']} mode), total run time {context['total_seconds']:.0f} s",
        f"- Machine: {context['machine']}",
        f"- Load average (1 min) at start and end: {context['load_start']} and {context['load_end']}"
        " (other processes share the cores; wall times include their interference)",
        f"- Versions: {context['versions']}",
        f"- BLAS threads: {context['blas_threads']}; this project's methods run on one thread",
        f"- Output times: {context['output_times']}; every run starts at t = 0 with the same atol = {context['atol']:g}",
        f"- Errors: max over the output times of the relative error of the loss (where the reference loss > "
        f"{context['loss_floor']:g}), m1 and q1, against {context['reference']}",
        f"- Timing: {context['timing_rule']}",
        "",
        "## Targets",
        "",
        *target_summary(wp, modes, exact),
        "",
        "## Work-precision sweep",
        "",
        f"System: {wp[0].case if wp else '–'}. Cells: wall time / max relative error. Plot: `work_precision.png`.",
        "",
        context.get("reference_check", ""),
        "",
        *work_precision_table(wp),
        "",
        "### Speed-up at equal or better accuracy",
        "",
        "Each successful peer run against the fastest run of this project (any method, any rtol) whose error "
        "is at most the peer's.",
        "",
        *speedup_table(wp),
        "",
        "## Spectral modes, K sweep (rtol 1e-8)",
        "",
        "Ratios (× fastest) are wall times over the fastest of this project's methods on the same system. "
        "Plot: `size_sweeps.png`.",
        "",
        *_case_tables(modes),
        "### Time per step",
        "",
        "Plot: `cost_per_step.png`.",
        "",
        *per_step_table(modes),
        "",
        "## Exact flow, d sweep (rtol 1e-8)",
        "",
        *_case_tables(exact),
        "## First call in a fresh process",
        "",
        context.get("first_call", ""),
        "",
        "## Where the rodas4 step spends its time",
        "",
        context.get("profile", ""),
        "",
        "## Skipped, timed-out and failed runs",
        "",
        *skip_list(records),
        "",
    ]
    path.write_text("\n".join(lines))
