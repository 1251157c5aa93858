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

``hierarchy compare`` reads the same ``[problem]`` and ``[solver]`` tables and,
in place of ``[truncation]``, a ``[compare]`` table (``CompareOptions``)::

    [compare]
    spectral_rules = [[2, 3], [3, 4], [4, 5], [6, 6], [8, 7]]  # [bins_per_decade, rule_order]
    exact_top = 8
    moment_orders = [1, 2, 4, 8]
    closures = ["zero", "copy", "ratio", "quadrature"]
    reference = "exact"             # or "finest_rule"; the default is "finest_rule" for d = inf
    reference_bins_per_decade = 12  # finest_rule only
    reference_rule_order = 8        # finest_rule only
    max_steps = 200000              # step budget of each compared truncation
    max_wall_seconds = 60.0         # wall-clock limit of each compared truncation
"""

import dataclasses
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the package supports Python 3.10 through tomli
    import tomli as tomllib

from .integrators import METHODS
from .model import PhaseRetrieval, model_from_config
from .pipeline import MAX_BINS_PER_DECADE, MAX_RULE_ORDER, SolverOptions, TruncationOptions
from .builtin_datasets import DATASETS, load_builtin
from .data_spectra import load_spectrum, spectrum_from_data
from .spectrum import EmpiricalSpec, PowerLawSpec
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
        "spectrum": str,
        "spectrum_file": str,
        "spectrum_kind": str,
        "normalisation": str,
        "dataset": str,
        "patch_size": int,
        "n_patches": int,
        "dataset_seed": int,
        "fit_first": int,
        "fit_last": int,
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
    # Read by hierarchy.model.model_from_config; an absent table is phase retrieval.
    "model": {
        "student": str,
        "teacher": str,
        "hermite_order": int,
        "noise_variance": float,
        "ridge": float,
        "prefactor": float,
    },
}
# problem.d and problem.a are required for power-law spectra only; build_problem_spec checks them.
REQUIRED_KEYS = {"problem": (), "truncation": (), "solver": (), "model": ()}
SPECTRA = ("power_law", "file", "dataset")
_POWER_LAW_KEYS = ("d", "a", "init_isotropic_exponent")
_FILE_KEYS = ("spectrum_file", "spectrum_kind", "normalisation", "fit_first", "fit_last")
_DATASET_KEYS = ("dataset", "patch_size", "n_patches", "dataset_seed", "normalisation", "fit_first", "fit_last")
_TYPE_NAMES = {
    int: "an integer",
    float: "a number",
    str: "a string",
    "dimension": "an integer or inf",
    "rule_list": "a list of [bins_per_decade, rule_order] pairs of integers",
    "int_list": "a list of integers",
    "str_list": "a list of strings",
}

# Tables of a ``hierarchy compare`` configuration and the expected type of every key.
COMPARE_FIELD_TYPES = {
    "problem": FIELD_TYPES["problem"],
    "solver": FIELD_TYPES["solver"],
    "model": FIELD_TYPES["model"],
    "compare": {
        "spectral_rules": "rule_list",
        "exact_top": int,
        "moment_orders": "int_list",
        "closures": "str_list",
        "reference": str,
        "reference_bins_per_decade": int,
        "reference_rule_order": int,
        "max_steps": int,
        "max_wall_seconds": float,
    },
}
COMPARE_REQUIRED_KEYS = {"problem": (), "solver": (), "compare": (), "model": ()}
REFERENCES = ("exact", "finest_rule")

# Keys of the shared [problem] and [solver] tables that ``hierarchy simulate``
# does not read, with the reason given when a configuration sets one.
SIMULATE_UNUSED_KEYS = {
    "problem": dict.fromkeys(
        ("seed",),
        "each seed listed in training.seeds draws its own initial point, so set the seeds there",
    ),
    "solver": dict.fromkeys(
        ("t_first", "t_end", "n_out"),
        "the flow is evaluated at the recorded training steps, t = eta * step, so set the last time with "
        "training.steps and training.eta and the number of output times with training.record_points",
    ),
}

# Tables of a ``hierarchy simulate`` configuration: the problem (a finite
# power law), the training run, and the solver of the exact-flow ODE.
SIMULATE_FIELD_TYPES = {
    "problem": {key: kind for key, kind in FIELD_TYPES["problem"].items() if key not in SIMULATE_UNUSED_KEYS["problem"]},
    "training": {
        "method": str,
        "eta": float,
        "steps": int,
        "seeds": "int_list",
        "n": int,
        "batch": int,
        "test_size": int,
        "record_points": int,
        "max_wall_seconds": float,
        "workers": int,
    },
    "solver": {key: kind for key, kind in FIELD_TYPES["solver"].items() if key not in SIMULATE_UNUSED_KEYS["solver"]},
}
SIMULATE_REQUIRED_KEYS = {"problem": (), "training": ("method", "eta", "steps"), "solver": ()}


class ConfigError(ValueError):
    """Invalid, unreadable or missing run configuration."""


@dataclass(frozen=True)
class RunConfig:
    """Everything one ``hierarchy run`` needs, read from a configuration file."""

    problem: PowerLawSpec
    truncation: TruncationOptions
    solver: SolverOptions
    source: str | None = None
    model_table: dict = dataclasses.field(default_factory=dict)

    @property
    def model(self):
        """The model of the ``[model]`` table: ``PhaseRetrieval`` when the table is absent or empty."""
        return build_model(self.model_table)

    def to_dict(self) -> dict:
        """Return the configuration as plain JSON types, one table per section, plus ``source``."""
        return {
            "source": self.source,
            "problem": dataclasses.asdict(self.problem),
            "truncation": dataclasses.asdict(self.truncation),
            "solver": dataclasses.asdict(self.solver),
            "model": dict(self.model_table),
        }


def build_model(table: dict):
    """Return ``PhaseRetrieval()`` for an empty ``[model]`` table, else the ``SingleIndexModel`` it describes."""
    if not table:
        return PhaseRetrieval()
    return model_from_config(table)


def _check_model(values: dict, prefix: str) -> dict:
    """Validate a ``[model]`` table now (parsing the expressions), so that errors appear before any run."""
    try:
        build_model(values)
    except ValueError as error:
        raise ConfigError(f"{prefix}{error}") from None
    return dict(values)


def _is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class CompareOptions:
    """Truncations that ``hierarchy compare`` runs and the reference it measures them against.

    Attributes
    ----------
    spectral_rules : tuple of (int, int)
        ``(bins_per_decade, rule_order)`` of each spectral-mode rule, both >= 1.
    exact_top : int
        Largest eigenvalues kept as exact nodes in every spectral rule, the reference's included.
    moment_orders, closures : tuple
        Every closure runs at every moment order K; orders that a closure
        rejects become skipped rows of the comparison.
    reference : str or None
        ``"exact"`` (the d-dimensional flow, finite d only) or ``"finest_rule"``
        (spectral modes on the rule ``reference_bins_per_decade x
        reference_rule_order``). ``None`` picks ``"exact"`` for finite d and
        ``"finest_rule"`` for d = inf.
    max_steps, max_wall_seconds : int, float
        Step budget and wall-clock limit in seconds of each compared
        truncation, so that a failing closure stops quickly. The reference
        uses the ``[solver]`` limits instead.
    """

    spectral_rules: tuple = ((2, 3), (3, 4), (4, 5), (6, 6), (8, 7))
    exact_top: int = 8
    moment_orders: tuple = (1, 2, 4, 8)
    closures: tuple = CLOSURES
    reference: str | None = None
    reference_bins_per_decade: int = 12
    reference_rule_order: int = 8
    max_steps: int = 200_000
    max_wall_seconds: float = 60.0

    def __post_init__(self):
        for rule in self.spectral_rules:
            if not (
                len(rule) == 2
                and all(_is_integer(value) for value in rule)
                and 1 <= rule[0] <= MAX_BINS_PER_DECADE
                and 1 <= rule[1] <= MAX_RULE_ORDER
            ):
                raise ValueError(
                    f"spectral_rules = {_plain_lists(self.spectral_rules)} is invalid: the rule {_plain_lists(rule)} "
                    f"must be a pair [bins_per_decade, rule_order] of integers, bins_per_decade in "
                    f"[1, {MAX_BINS_PER_DECADE}] and rule_order in [1, {MAX_RULE_ORDER}]"
                )
        _reject_duplicates("spectral_rules", self.spectral_rules)
        for order in self.moment_orders:
            if not (_is_integer(order) and 1 <= order <= MAX_ORDER):
                raise ValueError(
                    f"moment_orders = {_plain_lists(self.moment_orders)} is invalid: the order {order!r} "
                    f"must be an integer in [1, {MAX_ORDER}]"
                )
        _reject_duplicates("moment_orders", self.moment_orders)
        for closure in self.closures:
            if closure not in CLOSURES:
                raise ValueError(
                    f"closures = {_plain_lists(self.closures)} is invalid: {closure!r} is not a closure. "
                    f"Choose from {list(CLOSURES)}"
                )
        _reject_duplicates("closures", self.closures)
        if not self.spectral_rules and not (self.moment_orders and self.closures):
            raise ValueError(
                "spectral_rules = [] is invalid together with no moment truncation because there is nothing "
                "to compare. List at least one spectral rule, or moment orders and closures"
            )

        for name, lower, upper in (
            ("exact_top", 0, math.inf),
            ("reference_bins_per_decade", 1, MAX_BINS_PER_DECADE),
            ("reference_rule_order", 1, MAX_RULE_ORDER),
            ("max_steps", 1, math.inf),
        ):
            value = getattr(self, name)
            if not (_is_integer(value) and lower <= value <= upper):
                allowed = f">= {lower}" if math.isinf(upper) else f"in [{lower}, {upper}]"
                raise ValueError(f"{name} = {value!r} is invalid: it must be an integer {allowed}")
        if self.reference is not None and self.reference not in REFERENCES:
            raise ValueError(f"reference = {self.reference!r} is invalid: choose one of {list(REFERENCES)}")
        if not (isinstance(self.max_wall_seconds, (int, float)) and 0.0 < self.max_wall_seconds < math.inf):
            raise ValueError(
                f"max_wall_seconds = {self.max_wall_seconds!r} is invalid: "
                "the wall-clock limit must be a positive number of seconds"
            )

    def resolved_reference(self, infinite_dimension: bool) -> str:
        """Return the reference to use: ``reference``, or its default for finite or infinite d."""
        if self.reference is not None:
            return self.reference
        return "finest_rule" if infinite_dimension else "exact"


def _plain_lists(value) -> str:
    """Write tuples as TOML-like lists, the way the user wrote them in the file."""
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_plain_lists(item) for item in value) + "]"
    return repr(value)


def _reject_duplicates(name: str, values: tuple) -> None:
    seen = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{name} = {_plain_lists(values)} is invalid: {_plain_lists(value)} is listed twice")
        seen.add(value)


@dataclass(frozen=True)
class CompareConfig:
    """Everything one ``hierarchy compare`` needs, read from a configuration file."""

    problem: PowerLawSpec
    solver: SolverOptions
    compare: CompareOptions
    source: str | None = None
    model_table: dict = dataclasses.field(default_factory=dict)

    @property
    def model(self):
        """The model of the ``[model]`` table: ``PhaseRetrieval`` when the table is absent or empty."""
        return build_model(self.model_table)

    def to_dict(self) -> dict:
        """Return the configuration as plain JSON types, one table per section, plus ``source``."""
        compare = dataclasses.asdict(self.compare)
        for name in ("spectral_rules", "moment_orders", "closures"):
            compare[name] = [list(item) if isinstance(item, tuple) else item for item in compare[name]]
        return {
            "source": self.source,
            "problem": dataclasses.asdict(self.problem),
            "solver": dataclasses.asdict(self.solver),
            "compare": compare,
            "model": dict(self.model_table),
        }


def build_problem_spec(base_directory: Path | None = None, **values):
    """Return the problem spec of a ``[problem]`` table: ``PowerLawSpec`` or ``EmpiricalSpec``.

    ``spectrum`` selects the source of the eigenvalues: ``power_law``
    (``lam_i = i^(-a)``, needs ``d`` and ``a``), ``file`` (``spectrum_file``,
    a file of eigenvalues or a data matrix as ``spectrum_kind`` says, relative
    paths resolved against ``base_directory``) or ``dataset`` (a data set
    shipped with scikit-learn, ``digits`` or ``image_patches``). Measured
    spectra are normalised as ``normalisation`` says (``top`` by default).
    """
    spectrum = values.pop("spectrum", "power_law")
    if spectrum not in SPECTRA:
        raise ValueError(f"spectrum = {spectrum!r} is not available; choose one of {list(SPECTRA)}")
    allowed_extra = {"power_law": _POWER_LAW_KEYS, "file": _FILE_KEYS, "dataset": _DATASET_KEYS}[spectrum]
    common = ("b", "sigma0", "seed", "init_teacher_scale")
    for key in values:
        if key not in common and key not in allowed_extra:
            raise ValueError(
                f"{key} = {values[key]!r} does not apply to spectrum = {spectrum!r}; "
                f"the keys for it are {', '.join(common + allowed_extra)}"
            )
    if spectrum == "power_law":
        for key in ("d", "a"):
            if key not in values:
                raise ValueError(f"{key} = (missing) is invalid: a power-law spectrum needs the keys d and a")
        return PowerLawSpec(**values)

    shared = {key: values[key] for key in common if key in values}
    normalisation = values.get("normalisation", "top")
    if spectrum == "file":
        if "spectrum_file" not in values:
            raise ValueError("spectrum_file = (missing) is invalid: spectrum = \"file\" needs the path of the file")
        if not values["spectrum_file"]:
            raise ValueError('spectrum_file = "" is invalid: the path is empty; give the path of the file')
        path = Path(values["spectrum_file"])
        if not path.is_absolute() and base_directory is not None:
            path = base_directory / path
        try:
            measured = load_spectrum(path, kind=values.get("spectrum_kind", "eigenvalues"), normalisation=normalisation)
        except ValueError as error:
            raise ValueError(f"spectrum_file = {str(path)!r} is invalid: {error}") from None
    else:
        if "dataset" not in values:
            raise ValueError(f"dataset = (missing) is invalid: spectrum = \"dataset\" needs one of {list(DATASETS)}")
        options = {}
        if values["dataset"] == "image_patches":
            options = {
                "patch_size": values.get("patch_size", 12),
                "n_patches": values.get("n_patches", 20000),
                "seed": values.get("dataset_seed", 0),
            }
        elif any(key in values for key in ("patch_size", "n_patches", "dataset_seed")):
            raise ValueError(f"dataset = {values['dataset']!r} is invalid with patch options: only image_patches takes them")
        try:
            data = load_builtin(values["dataset"], **options)
        except ValueError as error:
            raise _name_dataset_option(values["dataset"], str(error)) from None
        measured = spectrum_from_data(data, f"scikit-learn {values['dataset']}", normalisation=normalisation)
    fit_range = {key: values[key] for key in ("fit_first", "fit_last") if key in values}
    return EmpiricalSpec(
        eigenvalues=tuple(float(value) for value in measured.eigenvalues), source=measured.source,
        provenance=measured.describe(), **shared, **fit_range,
    )


def _name_dataset_option(dataset: str, message: str) -> ValueError:
    """Return the error of ``load_builtin`` with its message starting with the configuration key it is about."""
    # image_patches starts its messages with the name of its argument.
    for argument, key in (("patch_size", "patch_size"), ("n_patches", "n_patches"), ("seed", "dataset_seed")):
        if message.startswith(f"{argument} = "):
            return ValueError(key + message[len(argument):])
    return ValueError(f"dataset = {dataset!r} is invalid: {message}")


def _read_toml(path: Path) -> dict:
    """Read the TOML file at ``path``, raising ``ConfigError`` when it is missing, unreadable or invalid."""
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
    except RecursionError:
        raise ConfigError(f"{path}: invalid TOML: the file is nested too deeply to read") from None
    return document


def load_config(path) -> RunConfig:
    """Read and validate the TOML configuration file at ``path``.

    Raises
    ------
    ConfigError
        When the file is missing or unreadable, is not valid TOML, has an
        unknown table or key, or a value of the wrong type or out of range.
    """
    path = Path(path)
    return parse_config(_read_toml(path), source=str(path))


def load_compare_config(path) -> CompareConfig:
    """Read and validate the ``hierarchy compare`` configuration file at ``path``.

    Raises
    ------
    ConfigError
        As ``load_config`` does, and also for a ``[truncation]`` table, which
        a comparison replaces by ``[compare]``.
    """
    path = Path(path)
    return parse_compare_config(_read_toml(path), source=str(path))


def parse_config(document: dict, source: str | None = None) -> RunConfig:
    """Validate a parsed TOML document and build the options it describes.

    ``source`` names the document in error messages (usually the file path).
    """
    prefix = f"{source}: " if source else ""
    _check_tables(document, FIELD_TYPES, prefix)

    options = {}
    targets = {"problem": _problem_builder(source), "truncation": TruncationOptions, "solver": SolverOptions}
    for table, target in targets.items():
        values = _check_table(table, document.get(table, {}), prefix)
        _check_ranges(table, values, prefix)
        options[table] = _construct(table, target, values, prefix)
    model_table = _check_model(_check_table("model", document.get("model", {}), prefix), prefix)
    if options["solver"].method == "exponential":
        if options["truncation"].kind == "moments":
            raise ConfigError(
                f'{prefix}solver.method = "exponential" is invalid with truncation.kind = "moments": it integrates '
                "spectral modes and the exact flow only; choose rodas4, radau5 or bdf"
            )
        _check_exponential_ridge(model_table, prefix)
    return RunConfig(
        problem=options["problem"], truncation=options["truncation"], solver=options["solver"], source=source,
        model_table=model_table,
    )


def _check_exponential_ridge(model_table: dict, prefix: str) -> None:
    if model_table.get("ridge", 0.0):
        raise ConfigError(
            f'{prefix}solver.method = "exponential" is invalid with model.ridge = {model_table["ridge"]!r}: '
            "it supports ridge = 0 only; choose rodas4, radau5 or bdf"
        )


def parse_compare_config(document: dict, source: str | None = None) -> CompareConfig:
    """Validate a parsed ``hierarchy compare`` document and build the options it describes.

    ``source`` names the document in error messages (usually the file path).
    An absent ``compare.reference`` becomes ``"exact"`` for finite d and
    ``"finest_rule"`` for d = inf.
    """
    prefix = f"{source}: " if source else ""
    if isinstance(document, dict) and "truncation" in document:
        raise ConfigError(
            f"{prefix}unknown table [truncation]: hierarchy compare runs the truncations listed in [compare] "
            f"(spectral_rules, moment_orders, closures). Allowed tables: {', '.join(COMPARE_FIELD_TYPES)}"
        )
    _check_tables(document, COMPARE_FIELD_TYPES, prefix)

    options = {}
    for table, target in (("problem", _problem_builder(source)), ("solver", SolverOptions), ("compare", CompareOptions)):
        values = _check_table(table, document.get(table, {}), prefix, COMPARE_FIELD_TYPES, COMPARE_REQUIRED_KEYS)
        if table != "compare":
            _check_ranges(table, values, prefix)
        options[table] = _construct(table, target, values, prefix, COMPARE_FIELD_TYPES)

    problem, compare = options["problem"], options["compare"]
    compare_values = document.get("compare", {})
    reference = compare.resolved_reference(problem.infinite)
    if reference == "exact" and problem.infinite:
        raise ConfigError(
            f'{prefix}compare.reference = "exact" is invalid for d = inf: there is no finite flow to integrate; '
            'use reference = "finest_rule"'
        )
    if reference == "exact":
        for key in ("reference_bins_per_decade", "reference_rule_order"):
            if key in compare_values:
                raise ConfigError(
                    f'{prefix}compare.{key} is set but the reference is the exact flow; it applies only with '
                    'reference = "finest_rule"'
                )
    compare = dataclasses.replace(compare, reference=reference)
    model_table = _check_model(
        _check_table("model", document.get("model", {}), prefix, COMPARE_FIELD_TYPES, COMPARE_REQUIRED_KEYS), prefix
    )
    if options["solver"].method == "exponential":
        if compare.moment_orders:
            raise ConfigError(
                f'{prefix}solver.method = "exponential" is invalid with compare.moment_orders = '
                f"{list(compare.moment_orders)}: it integrates spectral modes and the exact flow only; set "
                "moment_orders = [] or choose rodas4, radau5 or bdf"
            )
        _check_exponential_ridge(model_table, prefix)
    return CompareConfig(problem=problem, solver=options["solver"], compare=compare, source=source, model_table=model_table)


@dataclass(frozen=True)
class SimulateConfig:
    """Everything one ``hierarchy simulate`` needs: problem, training settings, ODE solver and worker count."""

    problem: PowerLawSpec
    training: object
    solver: SolverOptions
    workers: int | None
    source: str | None = None


def load_simulate_config(path) -> SimulateConfig:
    """Read and validate the ``hierarchy simulate`` configuration file at ``path``.

    Raises
    ------
    ConfigError
        As ``load_config`` does; the problem must be a power law of finite d.
    """
    path = Path(path)
    return parse_simulate_config(_read_toml(path), source=str(path))


def parse_simulate_config(document: dict, source: str | None = None) -> SimulateConfig:
    """Validate a parsed ``hierarchy simulate`` document and build the options it describes."""
    from .experiments import TrainingSettings

    prefix = f"{source}: " if source else ""
    if isinstance(document, dict) and document.get("model"):
        raise ConfigError(
            f"{prefix}[model] is not supported by hierarchy simulate: its compiled training loops implement the "
            "phase-retrieval gradient only; remove the table (or leave it empty) to train phase retrieval"
        )
    if isinstance(document, dict) and "model" in document:
        document = {key: value for key, value in document.items() if key != "model"}
    _check_tables(document, SIMULATE_FIELD_TYPES, prefix)
    if "training" not in document:
        raise ConfigError(f"{prefix}missing table [training], which needs at least the keys method, eta and steps")
    _reject_unused_simulate_keys(document, prefix)

    problem_values = _check_table("problem", document.get("problem", {}), prefix, SIMULATE_FIELD_TYPES, SIMULATE_REQUIRED_KEYS)
    problem = _construct("problem", _problem_builder(source), problem_values, prefix, SIMULATE_FIELD_TYPES)
    if not isinstance(problem, PowerLawSpec) or problem.infinite:
        raise ConfigError(f"{prefix}[problem] hierarchy simulate trains on sampled data, so it needs a power law of finite d")

    training_values = _check_table("training", document["training"], prefix, SIMULATE_FIELD_TYPES, SIMULATE_REQUIRED_KEYS)
    workers = training_values.pop("workers", None)
    training = _construct("training", TrainingSettings, training_values, prefix, SIMULATE_FIELD_TYPES)
    try:
        training.check_dimension(int(problem.d))
        if workers is not None:
            training.resolve_workers(int(problem.d), workers)
    except ValueError as error:
        # The messages start with the key: "n = ", "batch = ", "test_size = " or "workers = ".
        raise ConfigError(f"{prefix}training.{error}") from None

    solver_values = _check_table("solver", document.get("solver", {}), prefix, SIMULATE_FIELD_TYPES, SIMULATE_REQUIRED_KEYS)
    _check_ranges("solver", solver_values, prefix)
    solver = _construct("solver", SolverOptions, solver_values, prefix, SIMULATE_FIELD_TYPES)
    return SimulateConfig(problem=problem, training=training, solver=solver, workers=workers, source=source)


def _reject_unused_simulate_keys(document: dict, prefix: str) -> None:
    """Raise ``ConfigError`` naming every key of ``SIMULATE_UNUSED_KEYS`` that ``document`` sets."""
    for table, reasons in SIMULATE_UNUSED_KEYS.items():
        present = [key for key in document.get(table, {}) if key in reasons]
        if present:
            names = ", ".join(f"{table}.{key}" for key in present)
            verb = "is" if len(present) == 1 else "are"
            raise ConfigError(
                f"{prefix}{names} {verb} not used by hierarchy simulate and must be removed: {reasons[present[0]]}"
            )


def _problem_builder(source: str | None):
    base_directory = Path(source).resolve().parent if source else None

    def build(**values):
        return build_problem_spec(base_directory, **values)

    return build


def _check_tables(document: dict, field_types: dict, prefix: str) -> None:
    """Check that ``document`` is a table of known tables and contains ``[problem]``."""
    if not isinstance(document, dict):
        raise ConfigError(f"{prefix}the configuration must be a table, got {type(document).__name__}")

    for name, value in document.items():
        if name not in field_types:
            raise ConfigError(
                f"{prefix}unknown table [{name}]. Allowed tables: {', '.join(field_types)}"
            )
        if not isinstance(value, dict):
            raise ConfigError(f"{prefix}{name} must be a table [{name}], got {_describe_value(value)}")
    if "problem" not in document:
        raise ConfigError(f"{prefix}missing table [problem], which needs at least the keys d and a")


def _describe_value(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def _check_table(
    table: str, values: dict, prefix: str, field_types: dict = FIELD_TYPES, required_keys: dict = REQUIRED_KEYS
) -> dict:
    """Check keys and types of one table and return its values converted to int, float, str or tuples."""
    allowed = field_types[table]
    for key in values:
        if key not in allowed:
            raise ConfigError(
                f"{prefix}unknown key {table}.{key}. Allowed keys in [{table}]: {', '.join(allowed)}"
            )
    for key in required_keys[table]:
        if key not in values:
            raise ConfigError(
                f"{prefix}{table}.{key} is missing. The table [{table}] needs the keys {', '.join(required_keys[table])}"
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
        elif expected in ("rule_list", "int_list", "str_list"):
            valid = isinstance(value, list) and all(_is_list_item(item, expected) for item in value)
        else:
            valid = isinstance(value, expected) and not isinstance(value, bool)
        if not valid:
            raise ConfigError(
                f"{prefix}{table}.{key} = {_describe_value(value)} is invalid: expected {_TYPE_NAMES[expected]}"
            )
        if expected is float:
            converted[key] = float(value)
        elif expected == "rule_list":
            converted[key] = tuple(tuple(item) for item in value)
        elif expected in ("int_list", "str_list"):
            converted[key] = tuple(value)
        else:
            converted[key] = value
    return converted


def _is_list_item(item: Any, list_type: str) -> bool:
    if list_type == "rule_list":
        return isinstance(item, list) and len(item) == 2 and all(_is_integer(value) for value in item)
    if list_type == "int_list":
        return _is_integer(item)
    return isinstance(item, str)


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


def _construct(table: str, target, values: dict, prefix: str, field_types: dict = FIELD_TYPES):
    """Build the option dataclass and rewrite its validation message to name ``table.key``."""
    try:
        return target(**values)
    except ValueError as error:
        message = str(error)
        for key in field_types[table]:
            # The dataclasses start their messages with "key = " or "table key = ".
            pattern = rf"^(?:{table} )?{key} = "
            if re.match(pattern, message):
                raise ConfigError(prefix + re.sub(pattern, f"{table}.{key} = ", message, count=1)) from None
        raise ConfigError(f"{prefix}[{table}] {message}") from None
