"""Derive the leading finite-step correction of one-pass SGD for phase retrieval and check it by Monte Carlo.

One-pass SGD takes ``w <- w - eta g`` with the per-sample gradient of
``1/4 ((w·x)^2 - (w*·x)^2)^2``,

    g = c(u, v) x,    c = (u^2 - v^2) u,    u = w·x,  v = w*·x,  x ~ N(0, Σ),

a fresh ``x`` at every step and ``E[g] = ∇L``. Over one step, at a given ``w``:

- ``m_1 = wᵀΣw*`` is linear in ``w``, so ``E[Δm_1] = -eta E[g]ᵀΣw*`` exactly and
  ``m_1`` gets no ``eta^2`` term;
- ``q_1 = wᵀΣw`` is quadratic, so
  ``E[q_1(w - eta g)] - q_1(w) + 2 eta wᵀΣ E[g] = eta^2 E[gᵀΣg]`` exactly.

With ``t = eta * step`` the expected drift per unit time is therefore

    dm_1/dt = (rho_1 - 3 q_1) m_2 + 2 m_1 rho_2                      (the flow, unchanged)
    dq_1/dt = 2 (rho_1 - 3 q_1) q_2 + 4 m_1 m_2 + eta E[gᵀΣg].

``E[gᵀΣg] = E[c^2 xᵀΣx]`` follows from Isserlis' theorem. In a pairing of the
factors ``u^a v^b x_i x_j``, either ``x_i`` pairs with ``x_j``, and the
covariance ``Σ_ij`` contracts with the outer ``Σ_ij`` to ``tr Σ^2``. Or ``x_i``
and ``x_j`` pair with two of the ``u, v``, with ``E[u x_i] = (Σw)_i`` and
``E[v x_i] = (Σw*)_i``, which contract to ``wᵀΣ^3w = q_3``, ``m_3`` or
``rho_3``. The correction needs the level-3 statistics and ``tr Σ^2``, one
level above the flow's ``q_2, m_2, rho_2``. A second derivation by Gaussian
conditioning, ``E[xᵀΣx | u, v]``, must give the same polynomial.

With a mini-batch of ``B`` fresh samples and the mean gradient ``ḡ``,
``E[ḡᵀΣḡ] = E[gᵀΣg] / B + (1 - 1/B) ∇LᵀΣ∇L``: only the noise part is divided
by ``B``. ``∇LᵀΣ∇L`` is the discretisation term that full-batch gradient
descent keeps at any ``n``.

The per-step expectation is exact at a given ``w``. Reading it as an ODE for
``q_1`` replaces the random ``w`` of SGD by a typical one and neglects the
spread of the statistics between runs.

The script prints the derived expressions and checks them. Symbolically:
(a) the pairing derivation reproduces the flow's drifts of ``m_1`` and ``q_1``,
(b) the two derivations of ``E[gᵀΣg]`` agree, and (c) ``E[gᵀΣg]`` vanishes at
``w = ±w*``. By Monte Carlo at a random ``w`` in ``d = 30``: the drifts,
``E[gᵀΣg]`` and the batch formula at ``B = 4`` hold within 4 standard errors. It exits with status 1 if a check fails. Run it from the
repository root with the package importable, for instance
``PYTHONPATH=. python derivations/sgd_correction.py``.
"""

from __future__ import annotations

import sys

import numpy as np
import sympy

from hierarchy.spectrum import PowerLawSpec
from hierarchy.symbolic import gaussian_moments as gm
from hierarchy.symbolic.gaussian_moments import gaussian_expectation, gaussian_moment

u, v = gm.u, gm.v

# Level-one covariance entries of (u, v), as in gaussian_moments.
q1, m1, rho1 = gm.q, gm.m, gm.rho
q2, m2, rho2 = sympy.symbols("q_2 m_2 rho_2", real=True)
q3, m3, rho3 = sympy.symbols("q_3 m_3 rho_3", real=True)
trace_sigma2 = sympy.Symbol("trSigma2", positive=True)

# Per-sample gradient g = c(u, v) x of 1/4 (u^2 - v^2)^2.
GRADIENT_COEFFICIENT = (u**2 - v**2) * u

# Names for printing: gaussian_moments calls the level-one statistics q, m, rho.
_PRINTED_LEVEL_ONE = dict(zip((q1, m1, rho1), sympy.symbols("q_1 m_1 rho_1", real=True)))

MONTE_CARLO_SAMPLES = 2_000_000
MONTE_CARLO_CHUNK = 100_000
MAX_STANDARD_ERRORS = 4.0


def expect_one_sample_factor(polynomial: sympy.Expr, student_inner: sympy.Expr, teacher_inner: sympy.Expr) -> sympy.Expr:
    """Compute ``E[P(u, v) x·y]`` by Isserlis, given ``wᵀΣy`` and ``w*ᵀΣy``.

    ``x·y`` must pair with one of the ``u`` or ``v`` factors: a monomial
    ``u^a v^b`` gives ``a (wᵀΣy) E[u^(a-1) v^b] + b (w*ᵀΣy) E[u^a v^(b-1)]``.
    """
    total = sympy.Integer(0)
    for (a, b), coefficient in sympy.Poly(sympy.expand(polynomial), u, v).terms():
        a, b = int(a), int(b)
        if a >= 1:
            total += coefficient * a * student_inner * gaussian_moment(a - 1, b)
        if b >= 1:
            total += coefficient * b * teacher_inner * gaussian_moment(a, b - 1)
    return sympy.expand(total)


def expect_sample_quadratic_form(polynomial: sympy.Expr) -> sympy.Expr:
    """Compute ``E[P(u, v) xᵀΣx]`` by Isserlis, pairing by pairing.

    For a monomial ``u^a v^b`` the pairings of ``u^a v^b x_i x_j``, contracted
    with ``Σ_ij``, give

        tr Σ^2 E[u^a v^b]                        (x_i with x_j)
        + a (a - 1) q_3 E[u^(a-2) v^b]           (x_i and x_j with two u's)
        + 2 a b m_3 E[u^(a-1) v^(b-1)]           (one with a u, one with a v)
        + b (b - 1) rho_3 E[u^a v^(b-2)]         (both with v's)

    because ``(Σw)_i Σ_ij (Σw)_j = q_3`` and likewise for ``m_3`` and ``rho_3``.
    """
    total = sympy.Integer(0)
    for (a, b), coefficient in sympy.Poly(sympy.expand(polynomial), u, v).terms():
        a, b = int(a), int(b)
        total += coefficient * trace_sigma2 * gaussian_moment(a, b)
        if a >= 2:
            total += coefficient * a * (a - 1) * q3 * gaussian_moment(a - 2, b)
        if a >= 1 and b >= 1:
            total += coefficient * 2 * a * b * m3 * gaussian_moment(a - 1, b - 1)
        if b >= 2:
            total += coefficient * b * (b - 1) * rho3 * gaussian_moment(a, b - 2)
    return sympy.expand(total)


def expect_sample_quadratic_form_by_conditioning(polynomial: sympy.Expr) -> sympy.Expr:
    """Compute ``E[P(u, v) xᵀΣx]`` from the Gaussian conditional law of ``x`` given ``(u, v)``.

    With ``P = [w, w*]``, ``C = PᵀΣP = [[q_1, m_1], [m_1, rho_1]]`` and
    ``M = PᵀΣ^3P = [[q_3, m_3], [m_3, rho_3]]``, the law of ``x`` given
    ``z = (u, v)`` has mean ``ΣP C^-1 z`` and covariance ``Σ - ΣP C^-1 PᵀΣ``, so

        E[xᵀΣx | z] = tr Σ^2 - tr(C^-1 M) + zᵀ C^-1 M C^-1 z.
    """
    covariance = sympy.Matrix([[q1, m1], [m1, rho1]])
    third_level = sympy.Matrix([[q3, m3], [m3, rho3]])
    inverse = covariance.inv()
    z = sympy.Matrix([u, v])
    conditional = trace_sigma2 - (inverse * third_level).trace() + (z.T * inverse * third_level * inverse * z)[0, 0]
    numerator, denominator = sympy.fraction(sympy.together(sympy.expand(polynomial * conditional)))
    # The denominator is a power of det C = q_1 rho_1 - m_1^2, free of u and v.
    return sympy.factor(gaussian_expectation(sympy.expand(numerator)) / denominator)


def derive() -> dict:
    """Return the drifts, ``E[gᵀΣg]``, ``∇LᵀΣ∇L`` and the corrected ``dq_1/dt`` as SymPy expressions."""
    c = GRADIENT_COEFFICIENT
    # E[g]ᵀΣw*, E[g]ᵀΣw: y = Σw* gives wᵀΣy = m_2, w*ᵀΣy = rho_2; y = Σw gives q_2, m_2.
    gradient_dot_sigma_wstar = expect_one_sample_factor(c, m2, rho2)
    gradient_dot_sigma_w = expect_one_sample_factor(c, q2, m2)
    drift_m1 = -gradient_dot_sigma_wstar
    drift_q1 = -2 * gradient_dot_sigma_w

    mean_square = expect_sample_quadratic_form(c**2)
    # ∇L = -(alpha Σw + beta Σw*), so ∇LᵀΣ∇L = alpha^2 q_3 + 2 alpha beta m_3 + beta^2 rho_3.
    alpha = rho1 - 3 * q1
    beta = 2 * m1
    gradient_norm = sympy.expand(alpha**2 * q3 + 2 * alpha * beta * m3 + beta**2 * rho3)

    eta, batch = sympy.symbols("eta B", positive=True)
    corrected_dq1 = drift_q1 + eta * (mean_square / batch + (1 - 1 / batch) * gradient_norm)
    return {
        "drift_m1": drift_m1,
        "drift_q1": drift_q1,
        "mean_square": mean_square,
        "gradient_norm": gradient_norm,
        "corrected_dq1": corrected_dq1,
        "eta": eta,
        "batch": batch,
    }


def _printable(expression: sympy.Expr, collected: list) -> sympy.Expr:
    """Return ``expression`` in the printed names, collected in ``collected`` with factored coefficients."""
    return sympy.collect(sympy.expand(expression), collected, sympy.factor).subs(_PRINTED_LEVEL_ONE)


def check(label: str, difference: sympy.Expr) -> bool:
    """Print whether ``difference`` simplifies to zero and return the result."""
    remainder = sympy.simplify(difference)
    passed = remainder == 0
    print(f"  [{'ok' if passed else 'FAILED'}] {label}")
    if not passed:
        print(f"           nonzero difference: {remainder}")
    return passed


def symbolic_checks(derived: dict) -> list:
    flow_dm1 = (rho1 - 3 * q1) * m2 + 2 * m1 * rho2
    flow_dq1 = 2 * (rho1 - 3 * q1) * q2 + 4 * m1 * m2
    by_conditioning = expect_sample_quadratic_form_by_conditioning(GRADIENT_COEFFICIENT**2)
    at_teacher = {q1: rho1, m1: rho1, q3: rho3, m3: rho3}
    at_minus_teacher = {q1: rho1, m1: -rho1, q3: rho3, m3: -rho3}
    return [
        check("(a) -E[g]ᵀΣw* = (rho_1 - 3 q_1) m_2 + 2 m_1 rho_2", derived["drift_m1"] - flow_dm1),
        check("(a) -2 E[g]ᵀΣw = 2 (rho_1 - 3 q_1) q_2 + 4 m_1 m_2", derived["drift_q1"] - flow_dq1),
        check("(b) pairing and conditioning give the same E[gᵀΣg]", derived["mean_square"] - by_conditioning),
        check("(c) E[gᵀΣg] = 0 at w = w*", derived["mean_square"].subs(at_teacher)),
        check("(c) E[gᵀΣg] = 0 at w = -w*", derived["mean_square"].subs(at_minus_teacher)),
    ]


def _monte_carlo_point(d: int = 30, seed: int = 2024) -> dict:
    """Return a spectrum, a teacher and a random student in ``d`` dimensions with order-one statistics."""
    problem = PowerLawSpec(d=d, a=1.0, b=0.5).build()
    rng = np.random.default_rng(seed)
    w = 0.6 * problem.wstar + 0.8 * rng.standard_normal(d) / np.sqrt(np.sum(problem.lam))
    return {"lam": problem.lam, "wstar": problem.wstar, "w": w, "rng": rng}


def _statistic_values(lam: np.ndarray, w: np.ndarray, wstar: np.ndarray) -> dict:
    values = {trace_sigma2: float(np.sum(lam**2))}
    for level, (q_symbol, m_symbol, rho_symbol) in ((1, (q1, m1, rho1)), (2, (q2, m2, rho2)), (3, (q3, m3, rho3))):
        values[q_symbol] = float(np.sum(lam**level * w * w))
        values[m_symbol] = float(np.sum(lam**level * w * wstar))
        values[rho_symbol] = float(np.sum(lam**level * wstar * wstar))
    return values


def monte_carlo_checks(derived: dict, batch: int = 4) -> list:
    """Estimate the drifts, ``E[gᵀΣg]`` and ``E[ḡᵀΣḡ]`` at a random point and compare with the formulas."""
    point = _monte_carlo_point()
    lam, w, wstar, rng = point["lam"], point["w"], point["wstar"], point["rng"]
    d = lam.size
    values = _statistic_values(lam, w, wstar)
    predicted = {
        "-E[g]ᵀΣw*": float(derived["drift_m1"].subs(values)),
        "-2 E[g]ᵀΣw": float(derived["drift_q1"].subs(values)),
        "E[gᵀΣg]": float(derived["mean_square"].subs(values)),
        f"E[ḡᵀΣḡ], B = {batch}": float(
            (derived["mean_square"] / batch + (1 - sympy.Rational(1, batch)) * derived["gradient_norm"]).subs(values)
        ),
    }

    samples = {name: [] for name in predicted}
    for _ in range(MONTE_CARLO_SAMPLES // MONTE_CARLO_CHUNK):
        x = rng.standard_normal((MONTE_CARLO_CHUNK, d)) * np.sqrt(lam)
        student = x @ w
        teacher = x @ wstar
        coefficient = (student**2 - teacher**2) * student
        sigma_x = x * lam
        samples["-E[g]ᵀΣw*"].append(-coefficient * (sigma_x @ wstar))
        samples["-2 E[g]ᵀΣw"].append(-2.0 * coefficient * (sigma_x @ w))
        samples["E[gᵀΣg]"].append(coefficient**2 * np.einsum("ij,ij->i", x, sigma_x))
        # Mean gradient of consecutive groups of `batch` samples, then its Σ-norm.
        batch_gradient = (coefficient[:, None] * x).reshape(-1, batch, d).mean(axis=1)
        samples[f"E[ḡᵀΣḡ], B = {batch}"].append(np.einsum("ij,ij->i", batch_gradient, batch_gradient * lam))

    results = []
    statistics = ", ".join(
        f"{_PRINTED_LEVEL_ONE.get(symbol, symbol)} = {values[symbol]:.4g}"
        for symbol in (q1, m1, rho1, q3, m3, rho3, trace_sigma2)
    )
    print(f"Monte Carlo at a random w, d = {d}, {MONTE_CARLO_SAMPLES} samples: {statistics}")
    for name, expected in predicted.items():
        draws = np.concatenate(samples[name])
        estimate = float(np.mean(draws))
        standard_error = float(np.std(draws, ddof=1) / np.sqrt(draws.size))
        deviation = abs(estimate - expected) / standard_error
        passed = deviation <= MAX_STANDARD_ERRORS
        results.append(passed)
        print(
            f"  [{'ok' if passed else 'FAILED'}] {name}: formula {expected:.6g}, Monte Carlo {estimate:.6g} "
            f"± {standard_error:.2g} ({deviation:.2f} standard errors, limit {MAX_STANDARD_ERRORS:g})"
        )

    # How far a plausible wrong formula lands shows that the check has power:
    # level-2 statistics in place of the level-3 ones.
    wrong = float(derived["mean_square"].subs({q3: q2, m3: m2, rho3: rho2}).subs(values))
    draws = np.concatenate(samples["E[gᵀΣg]"])
    standard_error = float(np.std(draws, ddof=1) / np.sqrt(draws.size))
    print(
        f"  (for comparison: E[gᵀΣg] with q_2, m_2, rho_2 in place of q_3, m_3, rho_3 gives {wrong:.6g}, "
        f"{abs(float(np.mean(draws)) - wrong) / standard_error:.1f} standard errors away)"
    )
    return results


def main() -> int:
    derived = derive()
    print("One-pass SGD on phase retrieval, g = (u^2 - v^2) u x, u = w·x, v = w*·x, x ~ N(0, Σ):")
    print(f"  E[Δm_1] / eta = -E[g]ᵀΣw* = {_printable(derived['drift_m1'], [m2, rho2])}   (no eta^2 term: m_1 is linear in w)")
    print(f"  -2 wᵀΣE[g] = {_printable(derived['drift_q1'], [q2, m2])}")
    print()
    print("Noise term of the q_1 drift, from Isserlis' theorem:")
    print(f"  E[gᵀΣg] = {_printable(derived['mean_square'], [trace_sigma2, q3, m3, rho3])}")
    print(f"  ∇LᵀΣ∇L  = {_printable(derived['gradient_norm'], [q3, m3, rho3])}")
    print()
    print("Corrected drift of q_1 with t = eta * step, batch B of fresh samples:")
    print("  dq_1/dt = 2 (rho_1 - 3 q_1) q_2 + 4 m_1 m_2 + eta (E[gᵀΣg] / B + (1 - 1/B) ∇LᵀΣ∇L)")
    print("  dm_1/dt = (rho_1 - 3 q_1) m_2 + 2 m_1 rho_2")
    print()

    print("Symbolic checks:")
    results = symbolic_checks(derived)
    print()
    results += monte_carlo_checks(derived)

    if not all(results):
        print(f"{results.count(False)} of {len(results)} checks failed.")
        return 1
    print(f"All {len(results)} checks passed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
