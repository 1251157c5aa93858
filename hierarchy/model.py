"""Single-index models as seen by the rest of the package.

A model is reduced to its population loss ``F(q_1, m_1; rho_1)`` and its
*drive*, the compiled map from ``(q_1, m_1, rho_1)`` to the two scalars of the
gradient flow ``dw/dt = alpha Σw + beta Σw*`` and their derivatives. Both come
from code generated out of the SymPy derivation
(:mod:`hierarchy.symbolic.codegen`), never from a hand-written copy.

:class:`PhaseRetrieval` uses the module committed in ``hierarchy/_generated``.
:class:`SingleIndexModel` takes any student and teacher activation, derives
its loss with :mod:`hierarchy.symbolic.single_index` and generates its module
into a cache folder outside the package on first use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import numpy as np
import sympy
from numpy.typing import ArrayLike

from hierarchy import __version__
from hierarchy._generated import phase_retrieval as _phase_retrieval
from hierarchy.symbolic import codegen
from hierarchy.symbolic.expression_parser import (
    ExpressionError,
    format_activation,
    parse_activation,
    validate_activation,
    z,
)
from hierarchy.symbolic.single_index import (
    DEFAULT_HERMITE_ORDER,
    DEFAULT_PREFACTOR,
    MAX_HERMITE_ORDER,
    SingleIndexDerivation,
    derive_single_index,
    to_rational,
)

__all__ = ["MODEL_CONFIG_KEYS", "PhaseRetrieval", "SingleIndexModel", "evaluate_loss", "model_from_config"]

logger = logging.getLogger(__name__)

MODEL_CONFIG_KEYS = ("student", "teacher", "hermite_order", "noise_variance", "ridge", "prefactor")
"""Keys of the ``[model]`` table that :func:`model_from_config` reads."""

# Version of the key layout in SingleIndexModel.cache_key; bump it when the layout changes.
_CACHE_KEY_FORMAT = 1

# Sources that the text of a generated model module depends on.
_PACKAGE_FOLDER = Path(__file__).resolve().parent
_GENERATOR_SOURCES = tuple(
    _PACKAGE_FOLDER / name
    for name in (
        "kernel_types.py",
        "symbolic/codegen.py",
        "symbolic/expression_parser.py",
        "symbolic/gaussian_moments.py",
        "symbolic/hierarchy_equations.py",
        "symbolic/single_index.py",
    )
)


def evaluate_loss(
    kernels, q1: ArrayLike, m1: ArrayLike, rho1: ArrayLike, statistics_operations: int = 0, description: str = "loss"
) -> np.ndarray | float:
    """Evaluate the population loss with a generated kernel module, clearing negative rounding values.

    Every loss of these models is an expectation of a square, so ``F >= 0``
    wherever ``(q1, m1, rho1)`` are the statistics of real weights. Near
    ``F = 0`` the terms of ``F`` cancel, and rounding of the formula and of
    the statistics can give values such as ``-2e-16``. A negative value within
    ``kernels.loss_rounding_bound`` of zero is set to 0. A value below that
    bound is kept and logged as a warning, because the statistics then
    violate a constraint of real weights (``q1 rho1 >= m1^2`` or
    ``q1 >= 0``) by more than rounding, which integration or truncation
    error causes.

    Parameters
    ----------
    kernels : module
        A generated module with ``loss`` and ``loss_rounding_bound``.
    q1, m1, rho1 : float or array
        The statistics, broadcast against each other.
    statistics_operations : int
        Number of rounded operations behind each statistic: 0 for exact
        values, about ``d`` for a sum over ``d`` coordinates.
    description : str
        What the loss belongs to, for the warning.
    """
    loss = kernels.loss(q1, m1, rho1)
    with np.errstate(invalid="ignore", over="ignore"):
        bound = kernels.loss_rounding_bound(q1, m1, rho1, statistics_operations)
    # A loss that does not depend on the statistics (a constant model) comes back as a scalar.
    shape = np.broadcast_shapes(*(np.shape(value) for value in (q1, m1, rho1, loss)))
    values = np.array(np.broadcast_to(np.asarray(loss, dtype=np.float64), shape))
    bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), shape)

    # An overflowed loss of -inf has an infinite bound too, and it is not rounding.
    with np.errstate(invalid="ignore"):
        negative = values < 0.0
        rounding = negative & np.isfinite(values) & (values >= -bound)
    inconsistent = negative & ~rounding
    values[rounding] = 0.0
    if np.any(inconsistent):
        lowest = np.unravel_index(np.argmin(np.where(inconsistent, values, np.inf)), shape)
        q1_low, m1_low, rho1_low = (
            float(np.broadcast_to(np.asarray(value, dtype=np.float64), shape)[lowest]) for value in (q1, m1, rho1)
        )
        logger.warning(
            "%s is negative beyond rounding at %d of %d points, lowest %.3g (bound %.2g) at q1 = %.10g, "
            "m1 = %.10g, rho1 = %.10g, where q1 rho1 - m1^2 = %.3g. Integration or truncation error gives such "
            "statistics, so the values are kept",
            description, int(np.count_nonzero(inconsistent)), values.size, float(values[lowest]),
            float(bound[lowest]), q1_low, m1_low, rho1_low, q1_low * rho1_low - m1_low**2,
        )
    return float(values) if values.ndim == 0 else values


@dataclass(frozen=True)
class PhaseRetrieval:
    """Phase retrieval: student ``(w·x)^2``, teacher ``(w*·x)^2``, data ``x ~ N(0, Σ)``.

    The loss ``L(w) = 1/4 E[(ŷ - y)^2]`` depends on ``w`` only through
    ``q_1 = wᵀΣw`` and ``m_1 = wᵀΣw*``,

        F(q_1, m_1; rho_1) = 1/4 (3 q_1^2 - 2 q_1 rho_1 - 4 m_1^2 + 3 rho_1^2),

    and the gradient flow is ``dw/dt = alpha Σw + beta Σw*`` with
    ``alpha = rho_1 - 3 q_1`` and ``beta = 2 m_1``. ``rho_1 = w*ᵀΣw*`` is an
    argument of each call, so one instance serves every teacher.
    """

    name: ClassVar[str] = "phase_retrieval"
    is_phase_retrieval: ClassVar[bool] = True

    def loss(
        self, q1: ArrayLike, m1: ArrayLike, rho1: ArrayLike, statistics_operations: int = 0, description: str = "loss"
    ) -> np.ndarray | float:
        """Evaluate the population loss ``F(q_1, m_1; rho_1)``, elementwise on arrays.

        Negative values within the rounding bound are returned as 0, and
        ``statistics_operations`` sizes that bound (see :func:`evaluate_loss`).
        """
        return evaluate_loss(_phase_retrieval, q1, m1, rho1, statistics_operations, description)

    @property
    def drive(self):
        """Compiled drive, ``(q1, m1, rho1) -> (alpha, beta, dalpha_dq1, dalpha_dm1, dbeta_dq1, dbeta_dm1)``.

        A Numba dispatcher compiled for :data:`hierarchy.kernel_types.DRIVE_SIGNATURE`,
        so it can be passed to compiled code as a first-class function of type
        :data:`hierarchy.kernel_types.DriveType`.
        """
        return _phase_retrieval.drive

    @property
    def loss_kernel(self):
        """Compiled scalar loss ``(q1, m1, rho1) -> F``, for use inside Numba code.

        It evaluates the formula as it is, without clearing negative rounding values as ``loss`` does.
        """
        return _phase_retrieval.loss_kernel


@dataclass(frozen=True)
class SingleIndexModel:
    """Single-index model: student ``σ(w·x)``, teacher ``g(w*·x)`` with label noise, data ``x ~ N(0, Σ)``.

    The loss ``F(q_1, m_1; rho_1) = c E[(σ(u) - g(v))^2] + c s^2`` and its
    hierarchy come from :func:`hierarchy.symbolic.single_index.derive_single_index`.
    A non-polynomial activation enters through its Hermite surrogate of order
    ``hermite_order``, a polynomial approximation valid for ``q_1`` and
    ``rho_1`` of order 1 (see that module for the error bound).

    The kernels are generated on first use of ``loss``, ``loss_kernel`` or
    ``drive`` into :func:`hierarchy.symbolic.codegen.model_cache_directory`
    and reused by later processes. A model with ``σ = g = z^2``, ``c = 1/4``
    and no noise uses the committed phase-retrieval kernels instead.

    Attributes
    ----------
    student, teacher : sympy.Expr
        ``σ(z)`` and ``g(z)``. The constructor accepts strings for
        :func:`~hierarchy.symbolic.expression_parser.parse_activation` or SymPy
        expressions in a symbol ``z``, and stores the SymPy expression.
    hermite_order : int
        Order ``P`` of the Hermite surrogate, ``1 <= P <= 20``; unused when both activations are polynomials.
    noise_variance : float
        Variance ``s^2 >= 0`` of additive label noise. It adds ``c s^2`` to
        the loss and leaves the flow unchanged.
    ridge : float
        Strength ``μ >= 0`` of the penalty ``(μ/2)|w|^2``. It is not part of
        ``loss`` or ``drive``, because ``|w|^2 = q_0`` is not a level-one
        statistic. It adds ``-μ w`` to the flow and ``-μ`` to the Duhamel
        rates; every truncation of :mod:`hierarchy.truncation` reads it
        (see :func:`hierarchy.truncation.ridge.ridge_of`).
    prefactor : sympy.Rational
        ``c`` in the loss, ``1/4`` by default so that ``σ = g = z^2`` is the
        project's phase retrieval; ``1/2`` gives the plain half square loss.
    """

    student: sympy.Expr | str = "z**2"
    teacher: sympy.Expr | str = "z**2"
    hermite_order: int = DEFAULT_HERMITE_ORDER
    noise_variance: float = 0.0
    ridge: float = 0.0
    prefactor: sympy.Rational | float = DEFAULT_PREFACTOR

    def __post_init__(self) -> None:
        for field_name in ("student", "teacher"):
            value = getattr(self, field_name)
            try:
                expression = parse_activation(value) if isinstance(value, str) else validate_activation(value)
            except ExpressionError as error:
                raise ExpressionError(f"{field_name}: {error}") from None
            object.__setattr__(self, field_name, expression)

        order = self.hermite_order
        if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 1 <= order <= MAX_HERMITE_ORDER:
            raise ValueError(f"hermite_order = {order!r} is invalid: it must be an integer in [1, {MAX_HERMITE_ORDER}]")
        object.__setattr__(self, "hermite_order", int(self.hermite_order))

        for field_name in ("noise_variance", "ridge"):
            value = getattr(self, field_name)
            to_rational(value, field_name)
            object.__setattr__(self, field_name, float(value))

        prefactor = to_rational(self.prefactor, "prefactor")
        if prefactor == 0:
            raise ValueError("prefactor = 0 is invalid: it must be positive")
        object.__setattr__(self, "prefactor", prefactor)

    @property
    def uses_surrogate(self) -> bool:
        """Whether an activation is not a polynomial, so the loss uses a Hermite surrogate."""
        return not (self.student.is_polynomial(z) and self.teacher.is_polynomial(z))

    @property
    def is_phase_retrieval(self) -> bool:
        """Whether this is phase retrieval: ``σ = g = z^2``, prefactor ``1/4``, no noise and no ridge.

        Predictions derived for phase retrieval apply only then.
        """
        return self._has_phase_retrieval_kernels and self.ridge == 0.0

    @property
    def _has_phase_retrieval_kernels(self) -> bool:
        square = z**2
        return (
            sympy.expand(self.student - square) == 0
            and sympy.expand(self.teacher - square) == 0
            and self.prefactor == DEFAULT_PREFACTOR
            and self.noise_variance == 0.0
        )

    @property
    def name(self) -> str:
        """``phase_retrieval`` for phase retrieval, else ``single_index(student=..., teacher=...)``."""
        if self.is_phase_retrieval:
            return PhaseRetrieval.name
        return f"single_index(student={format_activation(self.student)}, teacher={format_activation(self.teacher)})"

    def describe(self) -> dict:
        """Return the model parameters as plain strings and numbers, for result files."""
        return {
            "model": self.name,
            "student": format_activation(self.student),
            "teacher": format_activation(self.teacher),
            "hermite_order": self.hermite_order if self.uses_surrogate else None,
            "noise_variance": self.noise_variance,
            "ridge": self.ridge,
            "prefactor": str(self.prefactor),
        }

    @cached_property
    def equations(self) -> SingleIndexDerivation:
        """Symbolic loss, surrogates, flow and hierarchy (derived on first access, which can take seconds)."""
        return derive_single_index(
            self.student,
            self.teacher,
            hermite_order=self.hermite_order,
            prefactor=self.prefactor,
            noise_variance=self.noise_variance,
            ridge=self.ridge,
        )

    @cached_property
    def cache_key(self) -> str:
        """SHA-256 of everything the generated module depends on.

        It covers the canonical SymPy form of both activations, the Hermite
        order (when used), the prefactor and the noise variance, the package
        version, the SymPy version and the generator sources. The ridge is
        left out because the kernels do not depend on it.
        """
        generator = hashlib.sha256()
        for path in _GENERATOR_SOURCES:
            generator.update(path.name.encode())
            generator.update(path.read_bytes())
        description = {
            "format": _CACHE_KEY_FORMAT,
            "student": sympy.srepr(self.student),
            "teacher": sympy.srepr(self.teacher),
            "hermite_order": self.hermite_order if self.uses_surrogate else None,
            "prefactor": str(self.prefactor),
            "noise_variance": str(to_rational(self.noise_variance, "noise_variance")),
            "package_version": __version__,
            "sympy_version": sympy.__version__,
            "generator_sources": generator.hexdigest(),
        }
        return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()

    @cached_property
    def _kernels(self):
        if self._has_phase_retrieval_kernels:
            return _phase_retrieval
        return codegen.load_model_module(self.cache_key, self._generate_source).module

    @property
    def module_path(self) -> Path:
        """File of the generated kernel module (the committed one for phase retrieval)."""
        return Path(self._kernels.__file__)

    def _generate_source(self) -> str:
        student, teacher = format_activation(self.student), format_activation(self.teacher)
        options = f"prefactor {self.prefactor}, label-noise variance {self.noise_variance!r}"
        if self.uses_surrogate:
            options = f"Hermite order {self.hermite_order}, " + options
        return codegen.generate_model_module(
            self.equations.equations,
            description=f"the single-index model with student {student} and teacher {teacher} ({options})",
            generator="hierarchy.model.SingleIndexModel",
            regenerate_command="delete this file; the next process that uses this SingleIndexModel writes it again",
        )

    def loss(
        self, q1: ArrayLike, m1: ArrayLike, rho1: ArrayLike, statistics_operations: int = 0, description: str = "loss"
    ) -> np.ndarray | float:
        """Evaluate the population loss ``F(q_1, m_1; rho_1)``, elementwise on arrays, without the ridge term.

        Negative values within the rounding bound are returned as 0, and
        ``statistics_operations`` sizes that bound (see :func:`evaluate_loss`).
        """
        return evaluate_loss(self._kernels, q1, m1, rho1, statistics_operations, description)

    @property
    def drive(self):
        """Compiled drive, ``(q1, m1, rho1) -> (alpha, beta, dalpha_dq1, dalpha_dm1, dbeta_dq1, dbeta_dm1)``.

        A Numba dispatcher compiled for :data:`hierarchy.kernel_types.DRIVE_SIGNATURE`,
        like :attr:`PhaseRetrieval.drive`.
        """
        return self._kernels.drive

    @property
    def loss_kernel(self):
        """Compiled scalar loss ``(q1, m1, rho1) -> F``, for use inside Numba code.

        It evaluates the formula as it is, without clearing negative rounding values as ``loss`` does.
        """
        return self._kernels.loss_kernel


def model_from_config(table: Mapping) -> SingleIndexModel:
    """Build a :class:`SingleIndexModel` from a ``[model]`` table of a TOML configuration.

    Keys (all optional): ``student`` and ``teacher`` (strings, default
    ``"z**2"``), ``hermite_order`` (integer), ``noise_variance``, ``ridge``
    and ``prefactor`` (numbers). An empty table is phase retrieval.

    Raises
    ------
    ValueError
        If a key is unknown or a value is invalid; the message names ``model.<key>``.
    """
    if not isinstance(table, Mapping):
        raise ValueError(f"[model] must be a table, got {type(table).__name__}")
    unknown = sorted(str(key) for key in table if key not in MODEL_CONFIG_KEYS)
    if unknown:
        raise ValueError(f"model.{unknown[0]} is not a known key; allowed keys: {', '.join(MODEL_CONFIG_KEYS)}")

    arguments = {}
    for key in ("student", "teacher"):
        if key in table:
            if not isinstance(table[key], str):
                raise ValueError(f"model.{key} = {table[key]!r} is invalid: expected a string such as \"tanh(z)\"")
            arguments[key] = table[key]
    if "hermite_order" in table:
        value = table["hermite_order"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"model.hermite_order = {value!r} is invalid: it must be an integer in [1, {MAX_HERMITE_ORDER}]")
        arguments["hermite_order"] = value
    for key in ("noise_variance", "ridge", "prefactor"):
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"model.{key} = {value!r} is invalid: it must be a finite number")
            arguments[key] = value

    try:
        return SingleIndexModel(**arguments)
    except ValueError as error:
        # Every validation message of SingleIndexModel starts with its field name.
        raise ValueError(f"model.{error}") from None
