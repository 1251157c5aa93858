"""Run configuration from a TOML file: problem, truncation and solver options.

A configuration file has up to three tables, and every key is optional
except ``problem.d`` and ``problem.a``::

    [problem]       # PowerLawSpec
    d = 2000                    # or inf
    a = 1.5
    b = 0.0
    sigma0 = 0.1
    seed = 0
    init_teacher_scale = 0.0    # must be > 0 for d = inf
    init_isotropic_exponent = 0.0

    [truncation]    # TruncationOptions
    kind = "spectral_modes"   # or "exact", "moments"
    bins_per_decade = 8
    rule_order = 6
    exact_top = 8
    exact_bottom = 0
    order = 4
    closure = "zero"          # a name in hierarchy.truncation.CLOSURES

    [solver]        # SolverOptions
    t_first = 1e-2
    t_end = 1e7
    n_out = 240
    method = "rodas4"
    rtol = 1e-10
    atol = 1e-14
    max_steps = 2000000
    max_wall_seconds = 600.0  # omit for no limit

Keys left out take the defaults of the dataclasses. Every problem is reported
as a :class:`ConfigError` whose message names the file and the field.
"""

import dataclasses
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the package supports Python 3.10 through tomli
    import tomli as tomllib

from .integrators import METHODS
from .pipeline import SolverOptions, TruncationOptions
from .spectrum import PowerLawSpec
from .truncation import CLOSURES
from .truncation.moment_hierarchy import MAX_ORDER

# Expected TOML type of every key: int, float (an integer is accepted too) or str.
FIELD_TYPES = {
    "problem": {
        "d": "dimension",
        "a": float,
        "b": float,
        "sigma0": float,
        "seed": int,
        "init_teacher_scale": float,
        "init_isotropic_exponent": float,
    },
    "truncation": {
        "kind": str,
        "bins_per_decade": int,
        "rule_order": int,
        "exact_top": int,
        "exact_bottom": int,
        "order": int,
        "closure": str,
    },
    "solver": {
        "t_first": float,
        "t_end": float,
        "n_out": int,
        "method": str,
        "rtol": float,
        "atol": float,
        "max_steps": int,
        "max_wall_seconds": float,
    },
}
REQUIRED_KEYS = {"problem": ("d", "a"), "truncation": (), "solver": ()}
_TARGET_CLASSES = {"problem": PowerLawSpec, "truncation": TruncationOptions, "solver": SolverOptions}
_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", "dimension": "an integer or inf"}


class ConfigError(ValueError):
    """Invalid, unreadable or missing run configuration."""


@dataclass(frozen=True)
class RunConfig:
    """Everything one ``hierarchy run`` needs, read from a configuration file."""

    problem: PowerLawSpec
    truncation: TruncationOptions
    solver: SolverOptions
    source: str | None = None

    def to_dict(self) -> dict:
        """Return the configuration as plain JSON types, one table per section, plus ``source``."""
        return {
            "source": self.source,
            "problem": dataclasses.asdict(self.problem),
            "truncation": dataclasses.asdict(self.truncation),
            "solver": dataclasses.asdict(self.solver),
        }


def load_config(path) -> RunConfig:
    """Read and validate the TOML configuration file at ``path``.

    Raises
    ------
    ConfigError
        When the file is missing or unreadable, is not valid TOML, has an
        unknown table or key, or a value of the wrong type or out of range.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config path {path} is a directory, expected a TOML file") from None
    except OSError as error:
        raise ConfigError(f"failed to read config file {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: the file is not UTF-8 ({error.reason} at byte {error.start})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None
    return parse_config(document, source=str(path))


def parse_config(document: dict, source: str | None = None) -> RunConfig:
    """Validate a parsed TOML document and build the options it describes.

    ``source`` names the document in error messages (usually the file path).
    """
    prefix = f"{source}: " if source else ""
    if not isinstance(document, dict):
        raise ConfigError(f"{prefix}the configuration must be a table, got {type(document).__name__}")

    for name, value in document.items():
        if name not in FIELD_TYPES:
            raise ConfigError(
                f"{prefix}unknown table [{name}]. Allowed tables: {', '.join(FIELD_TYPES)}"
            )
        if not isinstance(value, dict):
            raise ConfigError(f"{prefix}{name} must be a table [{name}], got {_describe_value(value)}")
    if "problem" not in document:
        raise ConfigError(f"{prefix}missing table [problem], which needs at least the keys d and a")

    options = {}
    for table, target in _TARGET_CLASSES.items():
        values = _check_table(table, document.get(table, {}), prefix)
        _check_ranges(table, values, prefix)
        options[table] = _construct(table, target, values, prefix)
    return RunConfig(problem=options["problem"], truncation=options["truncation"], solver=options["solver"], source=source)


def _describe_value(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def _check_table(table: str, values: dict, prefix: str) -> dict:
    """Check keys and types of one table and return its values converted to int, float or str."""
    allowed = FIELD_TYPES[table]
    for key in values:
        if key not in allowed:
            raise ConfigError(
                f"{prefix}unknown key {table}.{key}. Allowed keys in [{table}]: {', '.join(allowed)}"
            )
    for key in REQUIRED_KEYS[table]:
        if key not in values:
            raise ConfigError(
                f"{prefix}{table}.{key} is missing. The table [{table}] needs the keys {', '.join(REQUIRED_KEYS[table])}"
            )

    converted = {}
    for key, value in values.items():
        expected = allowed[key]
        if expected is float:
            valid = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif expected == "dimension":
            valid = (isinstance(value, int) and not isinstance(value, bool)) or (
                isinstance(value, float) and value == math.inf
            )
        else:
            valid = isinstance(value, expected) and not isinstance(value, bool)
        if not valid:
            raise ConfigError(
                f"{prefix}{table}.{key} = {_describe_value(value)} is invalid: expected {_TYPE_NAMES[expected]}"
            )
        converted[key] = float(value) if expected is float else value
    return converted


def _check_ranges(table: str, values: dict, prefix: str) -> None:
    """Check the ranges that the option dataclasses leave to the integrator or the truncation builder."""
    checks = []
    if table == "truncation":
        checks = [
            ("closure", lambda v: v in CLOSURES, f"choose one of {sorted(CLOSURES)}"),
            ("order", lambda v: 1 <= v <= MAX_ORDER, f"the moment order must be in [1, {MAX_ORDER}]"),
        ]
    elif table == "solver":
        checks = [
            ("method", lambda v: v in METHODS, f"choose one of {sorted(METHODS)}"),
            ("rtol", lambda v: 0.0 < v < 1.0, "the relative tolerance must be in (0, 1)"),
            ("atol", lambda v: 0.0 <= v < math.inf, "the absolute tolerance must be finite and >= 0"),
            ("max_steps", lambda v: v >= 1, "the step budget must be at least 1"),
            ("max_wall_seconds", lambda v: 0.0 < v < math.inf, "the wall-clock limit must be a positive number of seconds"),
        ]
    for key, is_valid, requirement in checks:
        if key in values and not is_valid(values[key]):
            raise ConfigError(f"{prefix}{table}.{key} = {values[key]!r} is invalid: {requirement}")


def _construct(table: str, target, values: dict, prefix: str):
    """Build the option dataclass and rewrite its validation message to name ``table.key``."""
    try:
        return target(**values)
    except ValueError as error:
        message = str(error)
        for key in FIELD_TYPES[table]:
            # The dataclasses start their messages with "key = " or "table key = ".
            pattern = rf"^(?:{table} )?{key} = "
            if re.match(pattern, message):
                raise ConfigError(prefix + re.sub(pattern, f"{table}.{key} = ", message, count=1)) from None
        raise ConfigError(f"{prefix}[{table}] {message}") from None
