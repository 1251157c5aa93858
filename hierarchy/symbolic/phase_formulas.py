"""SymPy expressions of the phase predictions: escape, relaxation near ``w*`` and the spectral-tail loss.

``derivations/phase_predictions.py`` derives and checks these expressions, and
:mod:`hierarchy.predictions` turns the same objects into numpy functions with
``sympy.lambdify``, so the checked formulas and the evaluated ones cannot
drift apart. Nothing here is numerical: sums over the spectrum are written as
one *summand* per spectral node, and the numerical code adds them up.

Notation (as in the package): ``lam`` is an eigenvalue of ``Σ``. The three
``lam``-weighted spectral measures of the start have node weights
``weight_initial = lam w_i(0)^2``, ``weight_cross = lam w_i(0) w*_i`` and
``weight_teacher = lam w*_i^2``, and ``rho_k = sum_i lam_i^k w*_i^2``.
"""

import sympy
from sympy.codegen.cfunctions import expm1

# Time, teacher statistics and the escape level m_esc.
t = sympy.Symbol("t", nonnegative=True)
rho, rho1, rho2, rho3 = sympy.symbols("rho rho1 rho2 rho3", positive=True)
m_escape = sympy.Symbol("m_escape", positive=True)

# Level-one statistics (any sign) and their starting values.
q1, m1 = sympy.symbols("q1 m1", real=True)
q, m = sympy.symbols("q m", real=True)
m_initial = sympy.Symbol("m_initial", positive=True)
q_initial = sympy.Symbol("q_initial", positive=True)

# One spectral node: its eigenvalue and the three lam-weighted measure weights.
lam = sympy.Symbol("lam", positive=True)
weight_initial, weight_cross, weight_teacher = sympy.symbols("weight_initial weight_cross weight_teacher", real=True)

# ---------------------------------------------------------------------------
# Loss and drive (the package's phase-retrieval model).

LOSS = sympy.Rational(1, 4) * (3 * q1**2 - 2 * q1 * rho1 - 4 * m1**2 + 3 * rho1**2)
ALPHA = -2 * sympy.diff(LOSS, q1)
BETA = -sympy.diff(LOSS, m1)

# ---------------------------------------------------------------------------
# Isotropic system, Σ = I: every level equals level one, |w*|^2 = rho.

_isotropic_levels = {q1: q, m1: m, rho1: rho}
ISOTROPIC_DM = (ALPHA * m1 + BETA * rho1).xreplace(_isotropic_levels)
ISOTROPIC_DQ = (2 * ALPHA * q1 + 2 * BETA * m1).xreplace(_isotropic_levels)

# Exact solution. With u = m^2 and p = q - m^2/rho (norm orthogonal to w*),
# u/p = C e^{4 rho t} and r = 1/p solves a linear ODE.
isotropic_ratio = sympy.Symbol("C", positive=True)
isotropic_transient = sympy.Symbol("K", real=True)
ISOTROPIC_ORTHOGONAL_NORM_INITIAL = q_initial - m_initial**2 / rho
ISOTROPIC_RATIO = m_initial**2 / ISOTROPIC_ORTHOGONAL_NORM_INITIAL
ISOTROPIC_TRANSIENT = 1 / ISOTROPIC_ORTHOGONAL_NORM_INITIAL - 3 / rho - ISOTROPIC_RATIO / rho**2
ISOTROPIC_INVERSE_ORTHOGONAL_NORM = (
    3 / rho + isotropic_ratio / rho**2 * sympy.exp(4 * rho * t) + isotropic_transient * sympy.exp(-2 * rho * t)
)
ISOTROPIC_OVERLAP_SQUARED = isotropic_ratio * sympy.exp(4 * rho * t) / ISOTROPIC_INVERSE_ORTHOGONAL_NORM
ISOTROPIC_NORM = (1 + isotropic_ratio / rho * sympy.exp(4 * rho * t)) / ISOTROPIC_INVERSE_ORTHOGONAL_NORM

# m^2 = m_escape^2 as a cubic in x = e^{2 rho t}, coefficients of x^3, x^2, x, 1.
growth = sympy.Symbol("x", positive=True)
ISOTROPIC_ESCAPE_CUBIC = (
    isotropic_ratio * (1 - m_escape**2 / rho**2),
    sympy.Integer(0),
    -3 * m_escape**2 / rho,
    -(m_escape**2) * isotropic_transient,
)
# Large-d limit of its root (the e^{-2 rho t} transient has died out at the escape).
ISOTROPIC_ESCAPE_TIME_ASYMPTOTIC = sympy.log(
    3 * ISOTROPIC_ORTHOGONAL_NORM_INITIAL * m_escape**2 / (rho * m_initial**2 * (1 - m_escape**2 / rho**2))
) / (4 * rho)

# ---------------------------------------------------------------------------
# Anisotropic escape.

# Leading order: dm_1/dt = 2 rho_2 m_1 on the manifold q_1 = rho_1/3.
ESCAPE_TIME_LEADING = sympy.log(m_escape / m_initial) / (2 * rho2)

# Linear regime dw/dt = (rho_1 Σ + 2 Σw* w*ᵀΣ) w. Its top eigenvalue mu solves
# 1 = sum of SECULAR_SUMMAND over the nodes; m_1 grows as amplitude e^{mu t}
# with amplitude = F / (2 S2), F and S2 the sums of the next two summands.
mu = sympy.Symbol("mu", positive=True)
amplitude = sympy.Symbol("amplitude", real=True)
SECULAR_SUMMAND = 2 * lam * weight_teacher / (mu - rho1 * lam)
RESOLVENT_CROSS_SUMMAND = weight_cross / (mu - rho1 * lam)
SECULAR_SLOPE_SUMMAND = lam * weight_teacher / (mu - rho1 * lam) ** 2
resolvent_cross_sum, secular_slope_sum = sympy.symbols("F S2", real=True)
TOP_AMPLITUDE = resolvent_cross_sum / (2 * secular_slope_sum)

# Duhamel propagators of the linear regime (alpha = rho_1, beta = 2 amplitude e^{mu t}).
LINEAR_PHI = sympy.exp(rho1 * lam * t)
LINEAR_PSI = 2 * lam * amplitude * (sympy.exp(mu * t) - sympy.exp(rho1 * lam * t)) / (mu - rho1 * lam)

# Node contributions to m_1, q_1 and q_2 for given propagators Phi, Psi.
phi, psi = sympy.symbols("Phi Psi", real=True)
OVERLAP_SUMMAND = phi * weight_cross + psi * weight_teacher
NORM_SUMMAND = phi**2 * weight_initial + 2 * phi * psi * weight_cross + psi**2 * weight_teacher
SECOND_NORM_SUMMAND = lam * NORM_SUMMAND

# Start above the saddle (q_1(0) >= rho_1/3): the norm relaxes first, Phi = e^{lam A}
# with sum_i weight_initial e^{2 lam A} = rho_1/3.
log_propagator = sympy.Symbol("A", real=True)
RELAXED_PHI = sympy.exp(lam * log_propagator)

# Saddle stage with saturation: d ln m_1/dt = 2 rho_2 (1 - k m_1^2).
switch_time, switch_overlap, switch_second_norm = sympy.symbols("t_s m_s q2_s", positive=True)
saturation = sympy.Symbol("k", positive=True)
SATURATION_CONSTANT = 3 * rho3**2 / (rho2**3 * (2 * rho2 + 3 * switch_second_norm))
ESCAPE_TIME_TWO_STAGE = switch_time + sympy.log(m_escape / switch_overlap) / (2 * rho2)
ESCAPE_TIME_CORRECTED = switch_time + sympy.log(
    m_escape**2 * (1 - saturation * switch_overlap**2) / (switch_overlap**2 * (1 - saturation * m_escape**2))
) / (4 * rho2)

# ---------------------------------------------------------------------------
# Relaxation near ±w*.

# Hessian 2 rho_1 Σ + 4 Σw* w*ᵀΣ: its eigenvalues nu solve 1 = sum of this summand.
nu = sympy.Symbol("nu", positive=True)
HESSIAN_SECULAR_SUMMAND = 4 * lam * weight_teacher / (nu - 2 * rho1 * lam)

# Deviations from the teacher: delta_m = m_1 - rho_1, tail norm Q = sum lam eps^2,
# bare overlap deviation D = sum lam w*_i eps_i(0) e^{-2 rho_1 lam_i t}.
delta_m, tail_norm, bare_overlap = sympy.symbols("delta_m Q D", real=True)
LOSS_NEAR_TEACHER = rho1 * tail_norm + 2 * delta_m**2 + 3 * delta_m * tail_norm + sympy.Rational(3, 4) * tail_norm**2
OVERLAP_DEVIATION = bare_overlap / 3 - tail_norm / 2
NORM_DEVIATION = 2 * bare_overlap / 3
DRIVE_SUM_DEVIATION = -sympy.Rational(4, 3) * bare_overlap - tail_norm  # sigma = alpha + beta
ALPHA_DEVIATION = -2 * bare_overlap  # alpha + 2 rho_1

BARE_OVERLAP_SUMMAND = (weight_cross - weight_teacher) * sympy.exp(-2 * rho1 * lam * t)
TAIL_NORM_SUMMAND = (weight_initial - 2 * weight_cross + weight_teacher) * sympy.exp(-4 * rho1 * lam * t)
TAIL_NORM_SLOPE_SUMMAND = lam * TAIL_NORM_SUMMAND
BARE_OVERLAP_INTEGRAL_SUMMAND = (weight_cross - weight_teacher) * (1 - sympy.exp(-2 * rho1 * lam * t)) / (2 * rho1 * lam)

# Feedback: first-order corrections of eps_i from alpha + 2 rho_1 and from sigma.
rate = sympy.Symbol("r", positive=True)
# int_0^t e^{-2 rho_1 lam (t - s)} e^{-r s} ds = (e^{-r t} - e^{-2 rho_1 lam t}) / (2 rho_1 lam - r),
# symmetric in r and 2 rho_1 lam. Written around the smaller rate with expm1, so
# that it neither overflows nor cancels; its limit at r = 2 rho_1 lam is t e^{-r t}.
_rate_gap = sympy.Abs(2 * rho1 * lam - rate)
CONVOLUTION_KERNEL = -sympy.exp(-sympy.Min(rate, 2 * rho1 * lam) * t) * expm1(-_rate_gap * t) / _rate_gap
convolution = sympy.Symbol("convolution", real=True)
bare_overlap_integral, tail_norm_slope = sympy.symbols("I_D Q_lam", real=True)
FEEDBACK_ALPHA_TERM = -4 * bare_overlap_integral * tail_norm_slope
FEEDBACK_SIGMA_SUMMAND = 2 * lam * (weight_cross - weight_teacher) * sympy.exp(-2 * rho1 * lam * t) * convolution
FEEDBACK_SQUARE_SUMMAND = lam**2 * weight_teacher * convolution**2
feedback_alpha, feedback_sigma, feedback_square = sympy.symbols("X_alpha X_sigma Y", real=True)
TAIL_LOSS_CORRECTED = (
    rho1 * (tail_norm + feedback_alpha + feedback_sigma + feedback_square)
    + (LOSS_NEAR_TEACHER - rho1 * tail_norm).subs(delta_m, OVERLAP_DEVIATION)
)

# ---------------------------------------------------------------------------
# Spectral-tail loss for lam_i = i^(-a), w*_i^2 = c2 i^(-b).

a = sympy.Symbol("a", positive=True)
b = sympy.Symbol("b", real=True)
d = sympy.Symbol("d", positive=True)
c2 = sympy.Symbol("c2", positive=True)
TAIL_EXPONENT = (a + b - 1) / a
exponent = sympy.Symbol("gamma", positive=True)

TAIL_SUMMAND = rho1 * weight_teacher * sympy.exp(-4 * rho1 * lam * t)
TAIL_INITIAL_SUMMAND = rho1 * TAIL_NORM_SUMMAND
TAIL_POWER_LAW = rho1 * c2 / a * sympy.gamma(TAIL_EXPONENT) * (4 * rho1 * t) ** (-TAIL_EXPONENT)
TAIL_FINITE_DIMENSION_SHIFT = -rho1 * c2 * d ** (1 - a - b) / (a + b - 1)
TAIL_CONTINUUM = rho1 * c2 / a * (4 * rho1 * t) ** (-TAIL_EXPONENT) * sympy.uppergamma(
    TAIL_EXPONENT, 4 * rho1 * t * d ** (-a)
)
TAIL_LOGARITHMIC = rho1 * c2 / a * (sympy.log(d**a / (4 * rho1 * t)) - sympy.EulerGamma)
TAIL_BOTTOM_CONTINUUM = c2 * d ** (1 - b) * sympy.exp(-4 * rho1 * t * d ** (-a)) / (4 * a * t)
TAIL_LAST_MODE = rho1 * c2 * d ** (-a - b) * sympy.exp(-4 * rho1 * t * d ** (-a))

# Start w(0) = s w* + (uncorrelated part of second moments eta w*_i^2): the tail
# starts from eps_i(0)^2 = ((1 - s)^2 + eta) w*_i^2 on average.
teacher_scale = sympy.Symbol("s", nonnegative=True)
isotropic_ratio_to_teacher = sympy.Symbol("eta", nonnegative=True)
INITIAL_TAIL_FACTOR = (1 - teacher_scale) ** 2 + isotropic_ratio_to_teacher


power_law_scale = sympy.Symbol("P", positive=True)


def _power_law_feedback_ratio():
    """Return the relative feedback correction ``r(t) = L / (rho_1 Q_0) - 1`` for power-law measures.

    Every sum is replaced by its continuum power law. With
    ``P = (c2/a) Gamma(gamma) t^(-gamma)`` and ``theta = 1 - s``, the tail norm is
    ``Q_0 = (theta^2 + eta) (4 rho_1)^(-gamma) P`` and the bare overlap deviation
    ``D = -theta (2 rho_1)^(-gamma) P``. Every correction term is proportional to
    ``P^2``, so ``r`` is the coefficient of ``P^2`` divided by that of ``Q_0``, times ``P``.
    """
    gamma_ = TAIL_EXPONENT
    theta = 1 - teacher_scale
    scale = power_law_scale
    tail = (theta**2 + isotropic_ratio_to_teacher) * (4 * rho1) ** (-gamma_) * scale
    overlap = -theta * (2 * rho1) ** (-gamma_) * scale
    sigma = DRIVE_SUM_DEVIATION.subs({bare_overlap: overlap, tail_norm: tail})
    # X_alpha: I_D = t D / (1 - gamma) and sum lam^2 eps0^2 e^{-4 rho_1 lam t} = gamma Q_0 / (4 rho_1 t).
    alpha_term = -gamma_ * overlap * tail / (rho1 * (1 - gamma_))
    # X_sigma: the integral of e^{-2 rho_1 lam (t - s)} s^(-gamma) against the tail modes.
    sigma_term = -2 * theta * gamma_ * sigma * scale * (2 * rho1) ** (-gamma_ - 1) * POWER_LAW_OVERLAP_INTEGRAL
    # Y: modes that relax fast follow sigma adiabatically, eps_i = w*_i sigma / (2 rho_1).
    square_term = sigma**2 / (4 * rho1)
    correction = TAIL_LOSS_CORRECTED.subs(
        {
            tail_norm: tail,
            bare_overlap: overlap,
            feedback_alpha: alpha_term,
            feedback_sigma: sigma_term,
            feedback_square: square_term,
        }
    ) - rho1 * tail
    # correction(P) = P^2 correction(1): the derivation script checks this homogeneity.
    return correction.subs(scale, 1) * scale / (rho1 * tail.subs(scale, 1))


# J(gamma) = int_0^1 u^(-gamma) (2 - u)^(-gamma - 1) du as a Gauss hypergeometric function.
POWER_LAW_OVERLAP_INTEGRAL = (
    2 ** (-exponent - 1) / (1 - exponent) * sympy.hyper([1 - exponent, 1 + exponent], [2 - exponent], sympy.Rational(1, 2))
).subs(exponent, TAIL_EXPONENT)
# r(t) in terms of the scale P; valid for 0 < gamma < 1, t >> 1 and an uncorrelated
# start part with the teacher's profile (init_isotropic_exponent = b).
TAIL_FEEDBACK_RATIO_IN_SCALE = _power_law_feedback_ratio()
TAIL_FEEDBACK_RATIO_POWER_LAW = TAIL_FEEDBACK_RATIO_IN_SCALE.subs(
    power_law_scale, c2 / a * sympy.gamma(TAIL_EXPONENT) * t ** (-TAIL_EXPONENT)
)
TAIL_POWER_LAW_CORRECTED = INITIAL_TAIL_FACTOR * TAIL_POWER_LAW * (1 + TAIL_FEEDBACK_RATIO_POWER_LAW)
