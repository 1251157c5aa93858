"""Configuration of ``hierarchy check``: a TOML file with a ``[check]`` grid and ``[solver]`` settings.

::

    [check]
    a = [0.0, 1.5, 2.0, 3.0]          # spectral exponents, lam_i = i^(-a)
    b = [0.0]                         # teacher exponents, w*_i^2 ∝ i^(-b)
    d = [1000, 100000, inf]           # dimensions: positive integers or inf
    sigma0 = [0.1]                    # scales of the random start (one number or a list)
    seeds = [0, 1]                    # seeds of the random start (finite d only)
    t_end = 1e8                       # last output time
    init_teacher_scale = 1e-3         # s in w(0) = s w* + ..., d = inf only (must be > 0)
    init_isotropic_exponent = "b"     # d = inf: profile exponent of the isotropic start part;
                                      # a number, or "b" for the teacher's exponent (the default)
    rule = "adaptive"                 # d = inf rule: "adaptive" (select_spectral_rule) or "fixed"
    rule_tolerance = 1e-6             # tolerance of the adaptive rule
    escape_level = 0.5                # escape at |m_1| / rho_1 = escape_level
    convergence_tolerance = 0.01      # convergence of |m_1|/rho_1 and q_1/rho_1 to 1
    slope_tolerance = 0.01            # power-law window: local slopes within ±slope_tolerance

    [solver]                          # SolverOptions, except t_end
    t_first = 1e-2
    n_out = 200
    method = "rodas4"
    rtol = 1e-10
    atol = 1e-16
    max_steps = 2000000
    max_wall_seconds = 300.0

Only ``a``, ``b``, ``d`` and ``t_end`` are required. Every error is a
:class:`CheckConfigError` whose message names the file, the table and the key;
unknown tables and keys are errors too.
"""

import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with tomli
    import tomli as tomllib

from .integrators import METHODS
from .pipeline import SolverOptions

RULES = ("adaptive", "fixed")
_REQUIRED = ("a", "b", "d", "t_end")


class CheckConfigError(ValueError):
    """An invalid ``hierarchy check`` configuration; the message names the file and the key."""


@dataclass(frozen=True)
class CheckGrid:
    """The grid of ``[check]`` and the settings of its measurements (see the module docstring)."""

    a: tuple
    b: tuple
    d: tuple
    t_end: float
    sigma0: tuple = (0.1,)
    seeds: tuple = (0,)
    init_teacher_scale: float = 1e-3
    init_isotropic_exponent: float | str = "b"
    rule: str = "adaptive"
    rule_tolerance: float = 1e-6
    escape_level: float = 0.5
    convergence_tolerance: float = 0.01
    slope_tolerance: float = 0.01


@dataclass(frozen=True)
class CheckConfig:
    """A ``hierarchy check`` configuration: the grid and the solver options (``t_end`` from the grid)."""

    grid: CheckGrid
    solver: SolverOptions = field(default_factory=SolverOptions)
    source: str | None = None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _describe(value) -> str:
    return f"{value!r} ({type(value).__name__})"


class _Reader:
    """Reads one table of the document, with the location prefix of its error messages."""

    def __init__(self, prefix: str, table: str, values: dict):
        self.prefix = prefix
        self.table = table
        self.values = values

    def error(self, key: str, message: str) -> CheckConfigError:
        return CheckConfigError(f"{self.prefix}[{self.table}] {key}: {message}")

    def number(self, key: str, low: float, high: float, *, low_open: bool = False, default=None) -> float:
        if key not in self.values:
            return default
        value = self.values[key]
        if not _is_number(value) or not math.isfinite(value):
            raise self.error(key, f"expected a finite number, got {_describe(value)}")
        if value < low or value > high or (low_open and value == low):
            bracket = "(" if low_open else "["
            raise self.error(key, f"{value!r} is out of range; it must lie in {bracket}{low:g}, {high:g}]")
        return float(value)

    def number_list(self, key: str, low: float, high: float, *, low_open: bool = False, default=None) -> tuple:
        if key not in self.values:
            return default
        raw = self.values[key]
        items = raw if isinstance(raw, list) else [raw]
        if not items:
            raise self.error(key, "the list is empty; give at least one number")
        result = []
        for item in items:
            if not _is_number(item) or not math.isfinite(item):
                raise self.error(key, f"expected numbers, got {_describe(item)}")
            if item < low or item > high or (low_open and item == low):
                bracket = "(" if low_open else "["
                raise self.error(key, f"{item!r} is out of range; every value must lie in {bracket}{low:g}, {high:g}]")
            result.append(float(item))
        _reject_duplicates(self, key, result)
        return tuple(result)

    def integer_list(self, key: str, low: int, high: int, default=None) -> tuple:
        if key not in self.values:
            return default
        raw = self.values[key]
        items = raw if isinstance(raw, list) else [raw]
        if not items:
            raise self.error(key, "the list is empty; give at least one integer")
        for item in items:
            if not _is_integer(item):
                raise self.error(key, f"expected integers, got {_describe(item)}")
            if not low <= item <= high:
                raise self.error(key, f"{item!r} is out of range; every value must lie in [{low}, {high}]")
        _reject_duplicates(self, key, items)
        return tuple(int(item) for item in items)

    def dimension_list(self, key: str) -> tuple:
        raw = self.values[key]
        items = raw if isinstance(raw, list) else [raw]
        if not items:
            raise self.error(key, "the list is empty; give at least one dimension")
        result = []
        for item in items:
            if _is_integer(item) and 1 <= item <= 10**8:
                result.append(int(item))
            elif isinstance(item, float) and math.isinf(item) and item > 0:
                result.append(math.inf)
            else:
                raise self.error(key, f"expected integers in [1, 100000000] or inf, got {_describe(item)}")
        _reject_duplicates(self, key, result)
        return tuple(result)

    def choice(self, key: str, choices: tuple, default: str) -> str:
        if key not in self.values:
            return default
        value = self.values[key]
        if value not in choices:
            raise self.error(key, f"{value!r} is not available; choose one of {list(choices)}")
        return value


def _reject_duplicates(reader: _Reader, key: str, values: list) -> None:
    seen = set()
    for value in values:
        if value in seen:
            raise reader.error(key, f"{value!r} appears twice; list each value once")
        seen.add(value)


logger = logging.getLogger(__name__)

# Each case is a full integration of seconds to minutes.
MAX_CASES = 10_000

_CHECK_KEYS = (
    "a", "b", "d", "sigma0", "seeds", "t_end", "init_teacher_scale", "init_isotropic_exponent",
    "rule", "rule_tolerance", "escape_level", "convergence_tolerance", "slope_tolerance",
)
_SOLVER_KEYS = ("t_first", "n_out", "method", "rtol", "atol", "max_steps", "max_wall_seconds")


def _reject_unknown(prefix: str, table: str, values: dict, known: tuple) -> None:
    for key in values:
        if key not in known:
            hint = ""
            if table == "solver" and key == "t_end":
                hint = "; set t_end in [check]"
            raise CheckConfigError(f"{prefix}[{table}] {key}: unknown key{hint}; known keys are {', '.join(known)}")


def _parse_grid(prefix: str, values: dict) -> CheckGrid:
    _reject_unknown(prefix, "check", values, _CHECK_KEYS)
    reader = _Reader(prefix, "check", values)
    for key in _REQUIRED:
        if key not in values:
            raise reader.error(key, "missing; it is required")

    isotropic_exponent = values.get("init_isotropic_exponent", "b")
    if isotropic_exponent != "b":
        isotropic_exponent = reader.number("init_isotropic_exponent", -5.0, 10.0)

    grid = CheckGrid(
        a=reader.number_list("a", 0.0, 10.0),
        b=reader.number_list("b", -5.0, 10.0),
        d=reader.dimension_list("d"),
        t_end=reader.number("t_end", 0.0, 1e15, low_open=True),
        sigma0=reader.number_list("sigma0", 0.0, 100.0, low_open=True, default=(0.1,)),
        seeds=reader.integer_list("seeds", 0, 2**63 - 1, default=(0,)),
        init_teacher_scale=reader.number("init_teacher_scale", 0.0, 10.0, low_open=True, default=1e-3),
        init_isotropic_exponent=isotropic_exponent,
        rule=reader.choice("rule", RULES, "adaptive"),
        rule_tolerance=reader.number("rule_tolerance", 0.0, 0.1, low_open=True, default=1e-6),
        escape_level=reader.number("escape_level", 0.0, 1.0, low_open=True, default=0.5),
        convergence_tolerance=reader.number("convergence_tolerance", 0.0, 0.5, low_open=True, default=0.01),
        slope_tolerance=reader.number("slope_tolerance", 0.0, 1.0, low_open=True, default=0.01),
    )
    if grid.escape_level >= 1.0:
        raise reader.error("escape_level", f"{grid.escape_level!r} is invalid; |m_1| / rho_1 tends to 1, so it must be below 1")
    _warn_settings_without_effect(prefix, values, grid)
    cases = len(grid.a) * len(grid.b) * len(grid.sigma0) * sum(1 if math.isinf(d) else len(grid.seeds) for d in grid.d)
    if cases > MAX_CASES:
        raise reader.error(
            "a",
            f"the grid a x b x d x sigma0 x seeds has {cases} cases, more than the limit of {MAX_CASES}; "
            "split it into several checks",
        )
    return grid


def _warn_settings_without_effect(prefix: str, values: dict, grid: CheckGrid) -> None:
    """Log the keys that no case of the grid uses, so that no setting is ignored without a word."""
    finite = [d for d in grid.d if not math.isinf(d)]
    if "seeds" in values and not finite:
        logger.warning("%s[check] seeds: no case uses it, because every d is inf, where the start has no seed", prefix)
    if len(finite) == len(grid.d):
        unused = [key for key in ("init_teacher_scale", "init_isotropic_exponent", "rule", "rule_tolerance") if key in values]
        if unused:
            logger.warning(
                "%s[check] %s: no case uses %s, because they apply only to d = inf and every d is finite",
                prefix, ", ".join(unused), "it" if len(unused) == 1 else "them",
            )


def _parse_solver(prefix: str, values: dict, t_end: float) -> SolverOptions:
    _reject_unknown(prefix, "solver", values, _SOLVER_KEYS)
    reader = _Reader(prefix, "solver", values)
    defaults = SolverOptions()
    options = {
        "t_first": reader.number("t_first", 0.0, 1e15, low_open=True, default=defaults.t_first),
        "rtol": reader.number("rtol", 0.0, 1.0, low_open=True, default=defaults.rtol),
        "atol": reader.number("atol", 0.0, 1.0, low_open=True, default=defaults.atol),
        "method": reader.choice("method", tuple(METHODS), defaults.method),
        "max_wall_seconds": reader.number("max_wall_seconds", 0.0, 1e9, low_open=True, default=defaults.max_wall_seconds),
    }
    for key, low, high, default in (("n_out", 2, 10**6, defaults.n_out), ("max_steps", 1, 10**12, defaults.max_steps)):
        if key in values:
            value = values[key]
            if not _is_integer(value) or not low <= value <= high:
                raise reader.error(key, f"expected an integer in [{low}, {high}], got {_describe(value)}")
            options[key] = int(value)
        else:
            options[key] = default
    if not options["t_first"] < t_end:
        raise reader.error("t_first", f"{options['t_first']!r} must be smaller than [check] t_end = {t_end!r}")
    try:
        return SolverOptions(t_end=t_end, **options)
    except ValueError as error:
        raise CheckConfigError(f"{prefix}[solver]: {error}") from None


def parse_check_config(document: dict, source: str | None = None) -> CheckConfig:
    """Validate a parsed TOML document and return its :class:`CheckConfig`."""
    prefix = f"{source}: " if source else ""
    for table, values in document.items():
        if table not in ("check", "solver"):
            if table == "model":
                raise CheckConfigError(
                    f"{prefix}[model]: hierarchy check tests the closed-form predictions of phase retrieval only, "
                    "so it takes no model; use hierarchy run or compare for other models"
                )
            raise CheckConfigError(f"{prefix}[{table}]: unknown table; a check configuration has [check] and [solver]")
        if not isinstance(values, dict):
            raise CheckConfigError(f"{prefix}{table}: expected a table, got {_describe(values)}")
    if "check" not in document:
        raise CheckConfigError(f"{prefix}[check]: missing; the table with the grid a, b, d and t_end is required")
    grid = _parse_grid(prefix, document["check"])
    solver = _parse_solver(prefix, document.get("solver", {}), grid.t_end)
    return CheckConfig(grid=grid, solver=solver, source=source)


def load_check_config(path) -> CheckConfig:
    """Read and validate the ``hierarchy check`` configuration at ``path``."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise CheckConfigError(f"{path}: configuration file not found") from None
    except OSError as error:
        raise CheckConfigError(f"{path}: cannot read the configuration: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise CheckConfigError(f"{path}: invalid TOML: {error}") from None
    return parse_check_config(document, str(path))
