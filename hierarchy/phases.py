"""Phase detection on a trajectory and the leading-order predictions for each phase.

From a small random start the gradient flow of phase retrieval has three phases:

1. escape: ``|m_1|`` grows from ``m_1(0)`` to order ``rho_1``;
2. convergence of the summary statistics, ``(m_1, q_1) -> (±rho_1, rho_1)``;
3. spectral-tail learning: the direction ``i`` relaxes at rate ``2 rho_1 lam_i``,
   so the residual loss is close to
   ``L_tail(t) = rho_1 sum_i lam_i w*_i^2 exp(-4 rho_1 lam_i t)``.

This module measures the escape time and the convergence time on the output
grid of a :class:`~hierarchy.trajectory.Trajectory`, evaluates the closed-form
predictions from the :class:`~hierarchy.spectrum.Problem`, and collects both in
a :class:`PhaseReport`. The measurements assume that ``t`` is strictly
increasing and positive, which the log-spaced output grid of ``SolverOptions``
guarantees.

:func:`detect_phases` measures the phases of any trajectory without a
problem: the escape time, the end of the convergence, and the longest window
after it where the local slope ``d ln L / d ln t`` is constant within a
tolerance, with the least-squares exponent, its standard error and the spread
of the local slopes (:class:`PowerLawFit`). The corrected closed-form
predictions live in :mod:`hierarchy.predictions`.
"""

import logging
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .json_values import to_json_value
from .spectrum import InfinitePowerLawProblem, Problem
from .trajectory import Trajectory
from .truncation import build_spectral_rule

logger = logging.getLogger(__name__)

# Escape is reached at |m_1| / rho_1 = ESCAPE_LEVEL, i.e. m_esc = rho_1 / 2.
ESCAPE_LEVEL = 0.5
# Relative distance of |m_1| and q_1 from rho_1 that counts as converged.
CONVERGENCE_TOLERANCE = 1e-2
# The phase-3 table skips output times where L(t) <= TAIL_LOSS_FLOOR * L(0),
# because there the measured loss is dominated by rounding.
TAIL_LOSS_FLOOR = 1e-12
# Number of rows of the phase-3 table.
TAIL_COMPARISON_POINTS = 6

# exp(-x) is exactly 0.0 in float64 for x > 745.2, so such terms of L_tail are skipped.
_EXP_UNDERFLOW_ARGUMENT = 746.0
# Maximum number of exponentials evaluated in one array operation of predict_tail_loss.
_CHUNK_ELEMENTS = 1 << 20
# Rule for the d = inf tail sum: finer than any truncation it is compared with.
TAIL_RULE_BINS_PER_DECADE = 12
TAIL_RULE_ORDER = 8


def _interpolate_log_time(t_before: float, t_after: float, value_before: float, value_after: float, level: float) -> float:
    """Return the time where the linear interpolant in ``log t`` of the values equals ``level``."""
    fraction = (level - value_before) / (value_after - value_before)
    log_time = math.log(t_before) + fraction * (math.log(t_after) - math.log(t_before))
    return math.exp(log_time)


def find_escape_time(t, m1, rho1: float, level: float = ESCAPE_LEVEL) -> float | None:
    """Measure the escape time, the first time at which ``|m_1| / rho_1 >= level``.

    The crossing is located between the last output below ``level`` and the
    first output at or above it, by linear interpolation of ``|m_1| / rho_1``
    in ``log t``. Returns ``t[0]`` when the first output is already at or
    above ``level`` (the crossing happened at or before ``t[0]``), and
    ``None`` when no output reaches ``level``. Non-finite values never count
    as reached, except ``+inf``.
    """
    t = np.asarray(t, dtype=np.float64)
    ratio = np.abs(np.asarray(m1, dtype=np.float64)) / rho1
    reached = np.flatnonzero(ratio >= level)
    if reached.size == 0:
        return None
    first = int(reached[0])
    if first == 0:
        return float(t[0])
    if not math.isfinite(ratio[first]) or not math.isfinite(ratio[first - 1]):
        return float(t[first])
    return _interpolate_log_time(t[first - 1], t[first], ratio[first - 1], ratio[first], level)


def predict_escape_time(m1_initial: float, rho1: float, rho2: float, level: float = ESCAPE_LEVEL) -> float | None:
    """Predict the escape time at leading order, ``T_esc = ln(m_esc / |m_1(0)|) / (2 rho_2)``.

    ``m_esc = level * rho_1``. On the manifold ``q_1 = rho_1 / 3`` the drive
    ``alpha = rho_1 - 3 q_1`` vanishes and the hierarchy gives
    ``dm_1/dt = 2 rho_2 m_1`` exactly, which integrates to this time. The
    statement is leading order only: it neglects the transient before
    ``q_1`` reaches ``rho_1 / 3`` and the growth of ``m_2, m_3, ...``, so it
    needs every ``m_k(0)`` small (not only ``m_1(0)``) and little initial
    norm parked in low-variance directions, which delays the escape.

    Returns ``None`` when the formula does not apply: ``m_1(0) = 0``,
    ``|m_1(0)| >= m_esc``, ``rho_2 <= 0`` or a non-finite argument.
    """
    m_escape = level * rho1
    m_start = abs(m1_initial)
    if not (math.isfinite(m_start) and math.isfinite(m_escape) and math.isfinite(rho2)):
        return None
    if m_start == 0.0 or m_start >= m_escape or rho2 <= 0.0:
        return None
    return math.log(m_escape / m_start) / (2.0 * rho2)


def convergence_deviation(m1, q1, rho1: float) -> np.ndarray:
    """Return ``max(| |m_1|/rho_1 - 1 |, |q_1/rho_1 - 1|)`` elementwise, ``inf`` where either is not finite."""
    m1 = np.asarray(m1, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    deviation = np.maximum(np.abs(np.abs(m1) / rho1 - 1.0), np.abs(q1 / rho1 - 1.0))
    return np.where(np.isfinite(deviation), deviation, np.inf)


def find_convergence_time(t, m1, q1, rho1: float, tolerance: float = CONVERGENCE_TOLERANCE) -> float | None:
    """Measure the end of the summary-statistic convergence.

    This is the first time after which both ``| |m_1|/rho_1 - 1 |`` and
    ``|q_1/rho_1 - 1|`` stay below ``tolerance`` on every later output. With
    ``D(t)`` the larger of the two deviations and ``t_j`` the last output
    where ``D >= tolerance``, the time is located between ``t_j`` and
    ``t_{j+1}`` by linear interpolation of ``D`` in ``log t`` (at
    ``t_{j+1}`` when ``D(t_j)`` is not finite). Returns ``t[0]`` when every
    output is within ``tolerance`` and ``None`` when the last output is not.

    Only the outputs reached are checked, so on a run that stopped early the
    statistics may still leave the tolerance later.
    """
    t = np.asarray(t, dtype=np.float64)
    deviation = convergence_deviation(m1, q1, rho1)
    if deviation.size == 0 or not deviation[-1] < tolerance:
        return None
    outside = np.flatnonzero(~(deviation < tolerance))
    if outside.size == 0:
        return float(t[0])
    last = int(outside[-1])
    if not math.isfinite(deviation[last]):
        return float(t[last + 1])
    return _interpolate_log_time(t[last], t[last + 1], deviation[last], deviation[last + 1], tolerance)


def predict_tail_loss(problem: Problem, t, max_chunk_elements: int = _CHUNK_ELEMENTS) -> np.ndarray:
    """Predict the phase-3 loss ``L_tail(t) = rho_1 sum_i lam_i w*_i^2 exp(-4 rho_1 lam_i t)``.

    Each direction relaxes at rate ``2 rho_1 lam_i`` near ``±w*``, and the
    loss is quadratic in the distance, hence the factor 4. This is the
    leading order: the rank-one part of the Hessian at ``w*`` and the
    feedback of ``alpha, beta`` correct the prefactor, and the formula is
    meaningless before the summary statistics have converged.

    ``t`` may have any shape and the result has the same shape. The sum is
    evaluated in blocks of at most ``max_chunk_elements`` exponentials (over
    ``t`` and, when ``d`` is larger than that, also over ``i``), so memory
    stays bounded for large ``d``. Terms with ``4 rho_1 lam_i t > 746``
    underflow to exactly zero and are skipped, which uses that ``lam`` is
    sorted in decreasing order. The cost is ``O(len(t) d)`` in the worst case.
    """
    times = np.asarray(t, dtype=np.float64)
    flat_times = times.ravel()
    rho1 = problem.rho1
    if isinstance(problem, InfinitePowerLawProblem):
        # d = inf: the sum over i becomes a fine quadrature of the teacher measure.
        horizon = float(np.max(flat_times)) if flat_times.size else 1.0
        rule = build_spectral_rule(problem, TAIL_RULE_BINS_PER_DECADE, TAIL_RULE_ORDER, 16, t_end=max(horizon, 1.0))
        rates = 4.0 * rho1 * rule.nodes
        weights = rho1 * rule.weights[2]
    else:
        rates = 4.0 * rho1 * problem.lam
        weights = rho1 * problem.lam * problem.wstar**2
    d = rates.size

    max_chunk_elements = max(1, int(max_chunk_elements))
    rows_per_chunk = max(1, max_chunk_elements // d)
    columns_per_chunk = min(d, max_chunk_elements)
    result = np.zeros(flat_times.size)

    for row_start in range(0, flat_times.size, rows_per_chunk):
        time_chunk = flat_times[row_start : row_start + rows_per_chunk]
        # Rates are decreasing, so the terms that underflow for the earliest
        # time of the chunk are a prefix of the rate array.
        earliest = float(np.min(time_chunk))
        first_column = 0
        if earliest > 0.0:
            first_column = int(np.searchsorted(-rates, -_EXP_UNDERFLOW_ARGUMENT / earliest, side="left"))
        for column_start in range(first_column, d, columns_per_chunk):
            column_stop = min(d, column_start + columns_per_chunk)
            exponent = -np.outer(time_chunk, rates[column_start:column_stop])
            result[row_start : row_start + time_chunk.size] += np.exp(exponent) @ weights[column_start:column_stop]

    return result.reshape(times.shape)


def select_tail_comparison_indices(t, loss, start_time: float | None, loss_floor: float, n_points: int) -> np.ndarray:
    """Select up to ``n_points`` output indices, log-spaced in time, for the phase-3 comparison.

    Candidates are the outputs with ``t >= start_time`` and a finite loss
    above ``loss_floor``. The targets are ``n_points`` log-spaced times from
    the first to the last candidate, and each target picks the candidate
    nearest in ``log t`` (duplicates are dropped). Returns an empty array when
    ``start_time`` is ``None`` or no output qualifies.
    """
    t = np.asarray(t, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    if start_time is None or n_points < 1:
        return np.zeros(0, dtype=np.int64)
    candidates = np.flatnonzero((t >= start_time) & np.isfinite(loss) & (loss > loss_floor))
    if candidates.size == 0:
        return np.zeros(0, dtype=np.int64)

    log_candidates = np.log(t[candidates])
    targets = np.linspace(log_candidates[0], log_candidates[-1], n_points)
    nearest = np.abs(log_candidates[None, :] - targets[:, None]).argmin(axis=1)
    return candidates[np.unique(nearest)]


@dataclass
class TailComparisonRow:
    """One row of the phase-3 table: measured and predicted loss at time ``t``.

    ``relative_error`` is ``predicted_loss / measured_loss - 1``.
    """

    t: float
    measured_loss: float
    predicted_loss: float
    relative_error: float


@dataclass
class PhaseReport:
    """Measured phase times of a trajectory next to their leading-order predictions.

    Attributes
    ----------
    rho1, rho2 : float
        Teacher statistics ``rho_k = w*^T Sigma^k w*``.
    m1_initial : float
        ``m_1(0)``, the input of the escape prediction.
    initial_loss : float
        ``L(0)``, the reference of ``tail_loss_floor``.
    escape_level : float
        Escape means ``|m_1| / rho_1 >= escape_level``.
    escape_time : float or None
        Measured escape time, ``None`` if the level was never reached.
    escape_time_predicted : float or None
        ``ln(m_esc / |m_1(0)|) / (2 rho_2)`` with ``m_esc = escape_level * rho_1``.
    escape_time_relative_error : float or None
        ``predicted / measured - 1`` when both exist.
    escape_time_corrected : float or None
        The corrected escape time of ``hierarchy.predictions.predict_escape``
        (linear regime until ``q_1 = rho_1/3``, then saturating growth at
        ``2 rho_2``), ``None`` where it does not apply.
    escape_time_corrected_relative_error : float or None
        ``corrected / measured - 1`` when both exist.
    predictions_note : str
        Why predictions are missing, when they are (empty otherwise).
    convergence_tolerance : float
        Tolerance on ``| |m_1|/rho_1 - 1 |`` and ``|q_1/rho_1 - 1|``.
    convergence_time : float or None
        Time after which both deviations stay below the tolerance.
    tail_loss_floor : float
        Outputs with a loss at or below this value are left out of the table.
    tail_comparison : list of TailComparisonRow
        Measured against predicted phase-3 loss after ``convergence_time``.
    trajectory_complete : bool
        Whether the integration reached the last requested time. The times
        above describe only the reached part when it did not.
    """

    rho1: float
    rho2: float
    m1_initial: float
    initial_loss: float
    escape_level: float
    escape_time: float | None
    escape_time_predicted: float | None
    escape_time_relative_error: float | None
    convergence_tolerance: float
    convergence_time: float | None
    tail_loss_floor: float
    tail_comparison: list = field(default_factory=list)
    trajectory_complete: bool = True
    escape_time_corrected: float | None = None
    escape_time_corrected_relative_error: float | None = None
    predictions_note: str = ""

    def to_dict(self) -> dict:
        """Return the report as plain JSON types, with every non-finite number replaced by ``None``."""
        return to_json_value(asdict(self))


def analyze_phases(
    trajectory: Trajectory,
    problem: Problem,
    *,
    initial_loss: float | None = None,
    tail_prediction=None,
    escape_level: float = ESCAPE_LEVEL,
    convergence_tolerance: float = CONVERGENCE_TOLERANCE,
    relative_loss_floor: float = TAIL_LOSS_FLOOR,
    tail_points: int = TAIL_COMPARISON_POINTS,
    model=None,
) -> PhaseReport:
    """Measure the phase times of ``trajectory`` and compare them with the predictions for ``problem``.

    Parameters
    ----------
    trajectory : Trajectory
        Integrated summary statistics; only the reached outputs are used.
    problem : Problem
        The problem that was integrated, for ``m_1(0)``, ``rho_2`` and the
        spectrum in ``L_tail``.
    initial_loss : float, optional
        ``L(0)``. Defaults to the loss at the first output time, which is
        close to ``L(0)`` when ``t_first`` is small.
    tail_prediction : array, optional
        ``predict_tail_loss(problem, trajectory.t)`` if already computed;
        otherwise it is evaluated at the selected times only.
    escape_level, convergence_tolerance : float
        See :func:`find_escape_time` and :func:`find_convergence_time`.
    relative_loss_floor : float
        The table keeps outputs with ``L > relative_loss_floor * |L(0)|``.
    tail_points : int
        Maximum number of rows of the phase-3 table.
    model : optional
        The model that was integrated. The closed-form predictions hold for
        phase retrieval only; for any other model (``is_phase_retrieval``
        false) they are left out and ``predictions_note`` says so.

    The measured escape time is the crossing located on the dense output
    during the integration (``trajectory.event_times["escape"]``) when the
    trajectory carries it at the default level, else it is interpolated on
    the output grid.
    """
    rho1 = trajectory.rho1
    rho2 = problem.rho(2)
    m1_initial = problem.m(1)
    if initial_loss is None:
        initial_loss = float(trajectory.loss[0]) if trajectory.loss.size else math.nan

    escape_time = find_escape_time(trajectory.t, trajectory.m1, rho1, escape_level)
    located = getattr(trajectory, "event_times", {}).get("escape")
    if escape_level == ESCAPE_LEVEL and located is not None:
        escape_time = float(located)

    covers = model is None or bool(getattr(model, "is_phase_retrieval", False))
    predictions_note = "" if covers else (
        "the closed-form predictions hold for phase retrieval (student and teacher z**2) only, "
        "so none are given for this model"
    )
    escape_time_predicted = predict_escape_time(m1_initial, rho1, rho2, escape_level) if covers else None
    escape_time_relative_error = None
    if escape_time is not None and escape_time_predicted is not None and escape_time > 0.0:
        escape_time_relative_error = escape_time_predicted / escape_time - 1.0
    escape_time_corrected = _corrected_escape_time(problem, escape_level) if covers else None
    escape_time_corrected_relative_error = None
    if escape_time is not None and escape_time_corrected is not None and escape_time > 0.0:
        escape_time_corrected_relative_error = escape_time_corrected / escape_time - 1.0

    convergence_time = find_convergence_time(trajectory.t, trajectory.m1, trajectory.q1, rho1, convergence_tolerance)

    loss_floor = relative_loss_floor * abs(initial_loss)
    indices = select_tail_comparison_indices(trajectory.t, trajectory.loss, convergence_time, loss_floor, tail_points)
    if not covers:
        indices = indices[:0]
        predicted = np.zeros(0)
    elif tail_prediction is None:
        predicted = predict_tail_loss(problem, trajectory.t[indices])
    else:
        predicted = np.asarray(tail_prediction, dtype=np.float64)[indices]
    rows = []
    for index, predicted_loss in zip(indices, predicted):
        measured_loss = float(trajectory.loss[index])
        rows.append(
            TailComparisonRow(
                t=float(trajectory.t[index]),
                measured_loss=measured_loss,
                predicted_loss=float(predicted_loss),
                relative_error=float(predicted_loss) / measured_loss - 1.0,
            )
        )

    return PhaseReport(
        rho1=float(rho1),
        rho2=float(rho2),
        m1_initial=float(m1_initial),
        initial_loss=float(initial_loss),
        escape_level=float(escape_level),
        escape_time=escape_time,
        escape_time_predicted=escape_time_predicted,
        escape_time_relative_error=escape_time_relative_error,
        convergence_tolerance=float(convergence_tolerance),
        convergence_time=convergence_time,
        tail_loss_floor=float(loss_floor),
        tail_comparison=rows,
        trajectory_complete=trajectory.success,
        escape_time_corrected=escape_time_corrected,
        escape_time_corrected_relative_error=escape_time_corrected_relative_error,
        predictions_note=predictions_note,
    )


def _corrected_escape_time(problem, level: float) -> float | None:
    """Return the corrected escape prediction, or ``None`` where the model behind it does not apply."""
    from .predictions import predict_escape

    try:
        corrected = predict_escape(problem, level).corrected
    except (ValueError, ArithmeticError) as error:
        logger.info("no corrected escape prediction: %s", error)
        return None
    return None if corrected is None or not math.isfinite(corrected) else float(corrected)


# ---------------------------------------------------------------------------
# Power-law window of the tail loss and phase detection on any trajectory.

# Local slopes d ln L / d ln t inside a power-law window stay within
# ±SLOPE_TOLERANCE of the middle of their range.
SLOPE_TOLERANCE = 0.01
# Minimum number of output times in a power-law window.
MIN_WINDOW_POINTS = 5


def local_log_slopes(t, loss) -> tuple:
    """Return the geometric midpoints of consecutive outputs and the slopes ``d ln L / d ln t`` between them."""
    t = np.asarray(t, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_t = np.log(t)
        log_loss = np.log(loss)
        slopes = np.diff(log_loss) / np.diff(log_t)
    midpoints = np.exp(0.5 * (log_t[1:] + log_t[:-1]))
    return midpoints, slopes


def _longest_flat_run(log_t: np.ndarray, slopes: np.ndarray, tolerance: float) -> tuple:
    """Return ``(first, last)`` slope indices of the longest run in ``log t`` whose slopes span at most ``2 tolerance``.

    Two pointers with monotone queues of the running minimum and maximum, so
    the search is linear in the number of slopes. Slope ``k`` joins outputs
    ``k`` and ``k + 1``; the run covers ``log_t[first]`` to ``log_t[last + 1]``.
    """
    best = (0, -1)
    best_length = -1.0
    low_queue, high_queue = [], []  # indices with increasing / decreasing slopes
    low_head = high_head = 0
    first = 0
    for last in range(slopes.size):
        value = slopes[last]
        while len(low_queue) > low_head and slopes[low_queue[-1]] >= value:
            low_queue.pop()
        low_queue.append(last)
        while len(high_queue) > high_head and slopes[high_queue[-1]] <= value:
            high_queue.pop()
        high_queue.append(last)
        while slopes[high_queue[high_head]] - slopes[low_queue[low_head]] > 2.0 * tolerance:
            first += 1
            if low_queue[low_head] < first:
                low_head += 1
            if high_queue[high_head] < first:
                high_head += 1
        length = log_t[last + 1] - log_t[first]
        if length > best_length:
            best, best_length = (first, last), length
    return best


def find_power_law_window(
    t,
    loss,
    start_time: float | None = None,
    tolerance: float = SLOPE_TOLERANCE,
    loss_floor: float = 0.0,
    min_points: int = MIN_WINDOW_POINTS,
) -> tuple | None:
    """Find the longest window in ``log t`` where the loss follows a power law.

    Candidates are the outputs with ``t >= start_time`` (all when ``None``)
    and a finite loss above ``loss_floor``. Within each unbroken run of
    candidates, the window is the longest stretch in ``log t`` whose local
    slopes ``d ln L / d ln t`` all lie within ``±tolerance`` of the middle of
    their range. Returns the output indices ``(first, last)`` (inclusive) of
    the longest such window over all runs, or ``None`` when no window has
    ``min_points`` outputs.
    """
    t = np.asarray(t, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    usable = np.isfinite(loss) & (loss > loss_floor) & (t > 0.0)
    if start_time is not None:
        usable &= t >= start_time
    indices = np.flatnonzero(usable)
    if indices.size < max(min_points, 2):
        return None

    # Unbroken runs of usable outputs.
    breaks = np.flatnonzero(np.diff(indices) > 1)
    runs = np.split(indices, breaks + 1)
    best, best_length = None, -1.0
    for run in runs:
        if run.size < max(min_points, 2):
            continue
        log_t = np.log(t[run])
        _, slopes = local_log_slopes(t[run], loss[run])
        first, last = _longest_flat_run(log_t, slopes, tolerance)
        if last - first + 2 < min_points:
            continue
        length = log_t[last + 1] - log_t[first]
        if length > best_length:
            best, best_length = (int(run[first]), int(run[last + 1])), length
    return best


@dataclass
class PowerLawFit:
    """Least-squares fit ``ln L = ln C - exponent ln t`` over a power-law window.

    Attributes
    ----------
    t_start, t_end : float
        First and last output time of the window.
    decades : float
        ``log10(t_end / t_start)``.
    n_points : int
        Number of outputs in the window.
    exponent : float
        Fitted decay exponent, minus the least-squares slope of ``ln L`` on ``ln t``.
    standard_error : float
        Standard error of the slope from the fit residuals (``nan`` with two points).
    prefactor : float
        Fitted ``C`` in ``L = C t^(-exponent)``.
    local_slope_min, local_slope_max, local_slope_std : float
        Range and standard deviation of the local slopes ``d ln L / d ln t`` in the window.
    slope_tolerance : float
        Tolerance that the window was found with.
    first_index, last_index : int
        Output indices of the window (inclusive).
    """

    t_start: float
    t_end: float
    decades: float
    n_points: int
    exponent: float
    standard_error: float
    prefactor: float
    local_slope_min: float
    local_slope_max: float
    local_slope_std: float
    slope_tolerance: float
    first_index: int
    last_index: int

    @property
    def local_slope_spread(self) -> float:
        """Return ``max - min`` of the local slopes in the window."""
        return self.local_slope_max - self.local_slope_min


def fit_power_law(t, loss, first: int, last: int, slope_tolerance: float = SLOPE_TOLERANCE) -> PowerLawFit:
    """Fit ``ln L`` against ``ln t`` by least squares over the outputs ``first..last`` (inclusive)."""
    t = np.asarray(t, dtype=np.float64)[first : last + 1]
    loss = np.asarray(loss, dtype=np.float64)[first : last + 1]
    if t.size < 2:
        raise ValueError(f"a power-law fit needs at least two outputs, got {t.size}")
    x = np.log(t)
    y = np.log(loss)
    x_mean = x.mean()
    spread = np.sum((x - x_mean) ** 2)
    slope = float(np.sum((x - x_mean) * (y - y.mean())) / spread)
    intercept = float(y.mean() - slope * x_mean)
    residuals = y - (intercept + slope * x)
    standard_error = math.sqrt(float(np.sum(residuals**2)) / (t.size - 2) / spread) if t.size > 2 else math.nan
    _, local = local_log_slopes(t, loss)
    return PowerLawFit(
        t_start=float(t[0]),
        t_end=float(t[-1]),
        decades=float(math.log10(t[-1] / t[0])),
        n_points=int(t.size),
        exponent=-slope,
        standard_error=standard_error,
        prefactor=math.exp(intercept),
        local_slope_min=float(local.min()),
        local_slope_max=float(local.max()),
        local_slope_std=float(local.std()),
        slope_tolerance=float(slope_tolerance),
        first_index=int(first),
        last_index=int(last),
    )


def detect_power_law(
    t,
    loss,
    start_time: float | None,
    tolerance: float = SLOPE_TOLERANCE,
    loss_floor: float = 0.0,
    min_points: int = MIN_WINDOW_POINTS,
) -> PowerLawFit | None:
    """Find the power-law window after ``start_time`` and fit it; ``None`` when there is none."""
    window = find_power_law_window(t, loss, start_time, tolerance, loss_floor, min_points)
    if window is None:
        return None
    return fit_power_law(t, loss, window[0], window[1], tolerance)


@dataclass
class PhaseDetection:
    """The three phases as measured on a trajectory.

    ``escape_time`` and ``convergence_time`` follow :func:`find_escape_time`
    and :func:`find_convergence_time`. ``power_law`` is the fit over the
    longest power-law window after the convergence, ``None`` when the
    statistics never converged or no window qualifies. ``loss_floor`` is the
    loss below which outputs are ignored as rounding.
    """

    escape_level: float
    escape_time: float | None
    convergence_tolerance: float
    convergence_time: float | None
    slope_tolerance: float
    loss_floor: float
    power_law: PowerLawFit | None
    trajectory_complete: bool

    def to_dict(self) -> dict:
        """Return the detection as plain JSON types, with every non-finite number replaced by ``None``."""
        return to_json_value(asdict(self))


def detect_phases(
    trajectory: Trajectory,
    *,
    initial_loss: float | None = None,
    escape_level: float = ESCAPE_LEVEL,
    convergence_tolerance: float = CONVERGENCE_TOLERANCE,
    slope_tolerance: float = SLOPE_TOLERANCE,
    relative_loss_floor: float = TAIL_LOSS_FLOOR,
    min_points: int = MIN_WINDOW_POINTS,
) -> PhaseDetection:
    """Measure the escape time, the end of the convergence and the power-law window of any trajectory.

    The power-law window starts at the convergence time and skips outputs
    with ``L <= relative_loss_floor * |L(0)|``; ``initial_loss`` defaults to
    the loss at the first output.
    """
    if initial_loss is None:
        initial_loss = float(trajectory.loss[0]) if trajectory.loss.size else math.nan
    loss_floor = relative_loss_floor * abs(initial_loss) if math.isfinite(initial_loss) else 0.0
    escape_time = find_escape_time(trajectory.t, trajectory.m1, trajectory.rho1, escape_level)
    convergence_time = find_convergence_time(
        trajectory.t, trajectory.m1, trajectory.q1, trajectory.rho1, convergence_tolerance
    )
    power_law = None
    if convergence_time is not None:
        power_law = detect_power_law(
            trajectory.t, trajectory.loss, convergence_time, slope_tolerance, loss_floor, min_points
        )
    return PhaseDetection(
        escape_level=float(escape_level),
        escape_time=escape_time,
        convergence_tolerance=float(convergence_tolerance),
        convergence_time=convergence_time,
        slope_tolerance=float(slope_tolerance),
        loss_floor=float(loss_floor),
        power_law=power_law,
        trajectory_complete=trajectory.success,
    )
