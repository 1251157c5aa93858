"""Peer integrators: SciPy ``solve_ivp`` and SUNDIALS CVODE (through scikit-sundae) on the same systems.

Each peer gets a plain vectorised NumPy right-hand side and an analytic
Jacobian of the form ``J = diag(D) + U V^T`` (rank two), written here from
the problem, the spectral rule and the model (not from the private
``params`` layout of the compiled system). ``cases.check_peer_callbacks``
compares them with the compiled ones before every benchmark case. NumPy
callbacks are used because calling the compiled ``system.rhs`` from Python
costs about 80 us per call (the conversion of the first-class drive
function), several times a NumPy evaluation at these sizes.

The best option each peer accepts:

- ``scipy-Radau``, ``scipy-BDF``: ``jac`` as a callable returning the dense
  Jacobian. ``J`` is dense (the rank-two part couples every pair of
  components), so a sparse matrix or ``jac_sparsity`` would not help, and
  ``solve_ivp`` accepts no ``LinearOperator``.
- ``scipy-LSODA``: dense ``jac`` callable (it takes no sparse Jacobian).
- ``cvode-dense``: CVODE BDF with a direct dense solver (LAPACK ``getrf``
  when SUNDIALS was built with LAPACK) and the dense analytic Jacobian.
- ``cvode-gmres``: CVODE BDF with matrix-free GMRES and the exact product
  ``J v = D v + U (V^T v)``. Its preconditioner solves ``(I - gamma J) z = r``
  exactly for the Jacobian of the last setup by the Sherman-Morrison-Woodbury
  identity, so every operation is ``O(n)`` and GMRES only has to correct for
  the change of the Jacobian since that setup.
- ``cvode-gmres-diag``: the same with the preconditioner ``I - gamma diag(D)``,
  what a user who does not exploit the rank-two part would write. GMRES then
  resolves the rank-two part itself. Its preconditioner solve is cheaper, and
  in the measured runs this variant was the faster of the two.

Every callback checks a deadline in CPU time of this process and raises
``PeerTimeout`` past it, so a peer run exceeds its budget by at most one
callback. The budget is CPU time because other processes on a shared machine
stretch the wall time of the same work.
"""

import time
from dataclasses import dataclass, field

import numpy as np
import scipy
from scipy.integrate import solve_ivp

try:
    import sksundae
    from sksundae.cvode import CVODE, CVODEJacTimes, CVODEPrecond
except ImportError:  # scikit-sundae is optional: pip install -e '.[bench]'
    sksundae = None

SCIPY_METHODS = ("Radau", "BDF", "LSODA")
# Peers that form and factor the dense n x n Jacobian.
DENSE_PEERS = ("scipy-Radau", "scipy-BDF", "scipy-LSODA", "cvode-dense")
# Krylov subspace size for CVODE GMRES (the scikit-sundae default is 5).
KRYLOV_DIMENSION = 5


def available_peers() -> list:
    """Return the names of the peers that can run in this environment."""
    names = [f"scipy-{method}" for method in SCIPY_METHODS]
    if sksundae is not None:
        names += ["cvode-dense", "cvode-gmres", "cvode-gmres-diag"]
    return names


def peer_versions() -> dict:
    """Return the versions of the peer libraries (for the report)."""
    versions = {"scipy": scipy.__version__}
    if sksundae is not None:
        versions["scikit-sundae"] = sksundae.__version__
        versions["SUNDIALS"] = sksundae._cy_common.config.get("SUNDIALS_VERSION", "unknown")
    return versions


class PeerTimeout(RuntimeError):
    """Raised inside a peer callback when the run used up its budget of CPU time."""


class LowRankProblem:
    """NumPy right-hand side and Jacobian ``diag(D) + U V^T`` of a hierarchy system.

    ``kind = "exact"``: the flow ``dw/dt = lam (alpha w + beta w*) - mu w``
    (state ``w``). ``kind = "modes"``: the spectral modes
    ``dPhi/dt = (lam alpha - mu) Phi``, ``dPsi/dt = (lam alpha - mu) Psi + lam beta``
    (state ``(Phi, Psi)``). ``mu`` is the model's ridge penalty (0 without one)
    and ``drive`` its compiled drive, called once per evaluation (about 0.2 us
    from Python). Use the constructors ``exact_flow`` and ``spectral_modes``.
    """

    def __init__(self, kind: str, model, rho1: float, lam, y0, wstar=None, weights=None):
        if kind not in ("exact", "modes"):
            raise ValueError(f"kind = {kind!r} is invalid; expected 'exact' or 'modes'")
        self.kind = kind
        self.drive = model.drive
        self.ridge = float(getattr(model, "ridge", 0.0) or 0.0)
        self.rho1 = float(rho1)
        self.lam = np.array(lam, dtype=np.float64)
        self.y0 = np.array(y0, dtype=np.float64)
        self.size = self.y0.size
        if kind == "exact":
            self.wstar = np.array(wstar, dtype=np.float64)
            self.lam_wstar = self.lam * self.wstar
            self.diag_scale = self.lam
        else:
            self.K = self.lam.size
            self.w00, self.w0s, self.wss = (np.array(row, dtype=np.float64) for row in weights)
            self.diag_scale = np.concatenate((self.lam, self.lam))
            self.dm_dy = np.concatenate((self.w0s, self.wss))
        self.deadline = np.inf

    @classmethod
    def exact_flow(cls, problem, model):
        """Return the exact flow of a finite ``problem`` (``hierarchy.spectrum.Problem``)."""
        return cls("exact", model, problem.rho1, problem.lam, problem.w0, wstar=problem.wstar)

    @classmethod
    def spectral_modes(cls, problem, model, rule):
        """Return the spectral modes on the nodes and weights of ``rule``, from ``Phi = 1``, ``Psi = 0``."""
        K = rule.size
        y0 = np.concatenate((np.ones(K), np.zeros(K)))
        return cls("modes", model, problem.rho1, rule.nodes, y0, weights=rule.weights)

    def statistics(self, y):
        """Return ``(q1, m1)`` at the state ``y``."""
        if self.kind == "exact":
            lam_w = self.lam * y
            return float(lam_w @ y), float(lam_w @ self.wstar)
        phi = y[: self.K]
        psi = y[self.K :]
        q1 = float(self.w00 @ (phi * phi) + 2.0 * (self.w0s @ (phi * psi)) + self.wss @ (psi * psi))
        m1 = float(self.w0s @ phi + self.wss @ psi)
        return q1, m1

    def check_deadline(self):
        if time.process_time() > self.deadline:
            raise PeerTimeout("the peer run used up its budget of CPU time")

    def rhs(self, t, y, out=None):
        """Evaluate ``dy/dt`` (into ``out`` when given)."""
        self.check_deadline()
        q1, m1 = self.statistics(y)
        alpha, beta = self.drive(q1, m1, self.rho1)[:2]
        if out is None:
            out = np.empty(self.size)
        rate = self.lam * alpha - self.ridge
        if self.kind == "exact":
            np.multiply(rate, y, out=out)
            out += beta * self.lam_wstar
        else:
            K = self.K
            np.multiply(rate, y[:K], out=out[:K])
            np.multiply(rate, y[K:], out=out[K:])
            out[K:] += beta * self.lam
        return out

    def jacobian_parts(self, y):
        """Return ``(D, U, V)`` with ``J = diag(D) + U V^T`` at the state ``y``."""
        self.check_deadline()
        q1, m1 = self.statistics(y)
        alpha, beta, alpha_q, alpha_m, beta_q, beta_m = self.drive(q1, m1, self.rho1)
        D = self.diag_scale * alpha - self.ridge
        if self.kind == "exact":
            U = np.column_stack((self.lam * y, self.lam_wstar))
            dq_dy = 2.0 * self.lam * y
            dm_dy = self.lam_wstar
        else:
            K = self.K
            phi = y[:K]
            psi = y[K:]
            U = np.zeros((self.size, 2))
            U[:K, 0] = self.lam * phi
            U[K:, 0] = self.lam * psi
            U[K:, 1] = self.lam
            dq_dy = np.concatenate((2.0 * (phi * self.w00 + psi * self.w0s), 2.0 * (phi * self.w0s + psi * self.wss)))
            dm_dy = self.dm_dy
        V = np.column_stack((alpha_q * dq_dy + alpha_m * dm_dy, beta_q * dq_dy + beta_m * dm_dy))
        return D, U, V

    def dense_jacobian(self, t, y, out=None):
        """Return the dense Jacobian (written into ``out`` when given)."""
        D, U, V = self.jacobian_parts(y)
        if out is None:
            out = np.empty((self.size, self.size))
        np.matmul(U, V.T, out=out)
        out[np.diag_indices(self.size)] += D
        return out

    def observe(self, states):
        """Return ``(m1, q1)`` for each row of ``states``, shape ``(n_times, 2)``."""
        values = np.empty((states.shape[0], 2))
        for i, y in enumerate(states):
            q1, m1 = self.statistics(y)
            values[i] = m1, q1
        return values


@dataclass
class PeerResult:
    """Outputs and cost of one peer run, in the units of ``hierarchy.integrators.Solution``."""

    method: str
    success: bool
    message: str
    wall_seconds: float
    cpu_seconds: float
    observables: np.ndarray
    stats: dict = field(default_factory=dict)
    timed_out: bool = False


def run_peer(name: str, problem: LowRankProblem, t_out, rtol: float, atol: float, budget_seconds: float) -> PeerResult:
    """Integrate ``problem`` from t = 0 to the output times with the peer ``name``, within ``budget_seconds`` of CPU time."""
    t_out = np.asarray(t_out, dtype=np.float64)
    if not t_out[0] > 0.0:
        raise ValueError(f"the first output time must be positive, got {t_out[0]!r}; t = 0 is the initial state")
    if name.startswith("scipy-"):
        runner = _run_scipy
    elif name.startswith("cvode-"):
        if sksundae is None:
            raise RuntimeError("scikit-sundae is not installed; install it with pip install 'scikit-sundae>=1.0'")
        runner = _run_cvode
    else:
        raise ValueError(f"unknown peer {name!r}; available: {', '.join(available_peers())}")

    started_wall = time.perf_counter()
    started_cpu = time.process_time()
    problem.deadline = started_cpu + budget_seconds
    try:
        success, message, observables, stats = runner(name, problem, t_out, rtol, atol)
        timed_out = False
    except PeerTimeout:
        success, message, observables, stats = False, f"timed out: used up its budget of {budget_seconds:g} s of CPU time", None, {}
        timed_out = True
    finally:
        problem.deadline = np.inf
    wall = time.perf_counter() - started_wall
    cpu = time.process_time() - started_cpu
    if observables is None or observables.shape[0] != t_out.size:
        observables = _pad_outputs(observables, t_out.size)
        if success:
            success, message = False, "returned fewer outputs than requested"
    return PeerResult(name, success, message, wall, cpu, observables, stats, timed_out)


def _pad_outputs(observables, n_out):
    padded = np.full((n_out, 2), np.nan)
    if observables is not None and observables.size:
        padded[: observables.shape[0]] = observables
    return padded


def _run_scipy(name, problem, t_out, rtol, atol):
    method = name.removeprefix("scipy-")
    result = solve_ivp(
        problem.rhs,
        (0.0, float(t_out[-1])),
        problem.y0,
        method=method,
        t_eval=t_out,
        rtol=rtol,
        atol=atol,
        jac=problem.dense_jacobian,
    )
    observables = problem.observe(result.y.T) if result.y.size else None
    stats = {"rhs_evaluations": int(result.nfev), "jacobian_evaluations": int(result.njev), "factorizations": int(result.nlu)}
    return bool(result.success), str(result.message), observables, stats


class _WoodburyPreconditioner:
    """Solve ``(I - gamma J) z = r`` for ``J = diag(D) + U V^T`` of the last CVODE setup.

    With ``C = 1 - gamma D`` and ``W = gamma U``,
    ``z = C^{-1} r + C^{-1} W (I - V^T C^{-1} W)^{-1} V^T C^{-1} r``.
    """

    def __init__(self, problem):
        self.problem = problem
        self.parts = None

    def setup(self, t, y, yp, jok, jnew, gamma):
        if jok and self.parts is not None:
            jnew[0] = 0
            return
        self.parts = self.problem.jacobian_parts(np.array(y))
        jnew[0] = 1

    def solve(self, t, y, yp, rvec, zvec, gamma, delta, lr):
        D, U, V = self.parts
        core = 1.0 - gamma * D
        scaled_r = rvec / core
        Z = (gamma * U) / core[:, None]
        capacitance = np.eye(U.shape[1]) - V.T @ Z
        zvec[:] = scaled_r + Z @ np.linalg.solve(capacitance, V.T @ scaled_r)


class _DiagonalPreconditioner(_WoodburyPreconditioner):
    """Solve ``(I - gamma diag(D)) z = r``, leaving the rank-two part of ``J`` to GMRES."""

    def solve(self, t, y, yp, rvec, zvec, gamma, delta, lr):
        zvec[:] = rvec / (1.0 - gamma * self.parts[0])


class _ExactJacobianProduct:
    """``J v = D v + U (V^T v)`` at the current Newton iterate."""

    def __init__(self, problem):
        self.problem = problem
        self.parts = None

    def setup(self, t, y, yp):
        self.parts = self.problem.jacobian_parts(np.array(y))

    def product(self, t, y, yp, v, Jv):
        D, U, V = self.parts
        Jv[:] = D * v + U @ (V.T @ v)


def _run_cvode(name, problem, t_out, rtol, atol):
    def rhs(t, y, yp):
        problem.rhs(t, y, yp)

    options = dict(rtol=rtol, atol=atol, max_num_steps=10**8, method="BDF")
    if name == "cvode-dense":
        lapack = sksundae._cy_common.config.get("SUNDIALS_BLAS_LAPACK_ENABLED", "False") == "True"
        options["linsolver"] = "lapackdense" if lapack and problem.size >= 100 else "dense"

        def jacobian(t, y, yp, JJ):
            problem.dense_jacobian(t, y, JJ)

        options["jacfn"] = jacobian
    else:
        if name == "cvode-gmres":
            preconditioner = _WoodburyPreconditioner(problem)
        elif name == "cvode-gmres-diag":
            preconditioner = _DiagonalPreconditioner(problem)
        else:
            raise ValueError(f"unknown CVODE peer {name!r}; available: cvode-dense, cvode-gmres, cvode-gmres-diag")
        product = _ExactJacobianProduct(problem)
        options.update(
            linsolver="gmres",
            krylov_dim=KRYLOV_DIMENSION,
            precond=CVODEPrecond(preconditioner.setup, preconditioner.solve, side="left"),
            jactimes=CVODEJacTimes(product.setup, product.product),
        )

    solver = CVODE(rhs, **options)
    result = solver.solve(np.concatenate(([0.0], t_out)), problem.y0)
    problem.check_deadline()
    states = np.asarray(result.y)
    # The first row is the initial state at t = 0.
    observables = problem.observe(states[1:]) if states.ndim == 2 and states.shape[0] > 1 else None
    stats = {"rhs_evaluations": int(result.nfev), "jacobian_evaluations": int(result.njev)}
    return bool(result.success), str(result.message), observables, stats
