"""Sweep files: a base configuration and the parameter values to combine, expanded into points.

A sweep file is TOML with two tables::

    [base.problem]          # the tables of a run configuration (hierarchy.config)
    d = 500
    a = 1.5
    [base.truncation]
    kind = "spectral_modes"
    [base.solver]
    t_end = 1e5

    [sweep]
    mode = "grid"           # or "zip"; the default is "grid"
    "problem.a" = [0.5, 1.0, 1.5]
    "problem.seed" = [0, 1, 2]

Each key of ``[sweep]`` other than ``mode`` is a parameter path
``table.key`` of the run configuration, and its value is the list of values
to try. Unquoted dotted keys (``problem.a = [...]``) and subtables
(``[sweep.problem]``) name the same paths. A swept value replaces the value
of the same key in ``[base]``.

``mode = "grid"`` runs every combination (the last parameter varies
fastest), and ``mode = "zip"`` runs the i-th value of every list together,
so all lists must have the same length. Every point is validated through
:func:`hierarchy.config.parse_config` when the file is read, and the first
invalid point raises :class:`SweepConfigError` naming the point and the
field.

A relative ``problem.spectrum_file`` is resolved against the directory of
the sweep file, as ``hierarchy run`` resolves it against the configuration's
directory, and each point's document contains the resolved path.

A point's id is the SHA-256 of its canonical configuration (see
:func:`canonical_config_json`), so two points with the same resolved options
share an id, whatever file or sweep they came from.
"""

import copy
import hashlib
import itertools
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the package supports Python 3.10 through tomli
    import tomli as tomllib

from ..config import FIELD_TYPES, ConfigError, RunConfig, parse_config

SWEEP_MODES = ("grid", "zip")
SWEEP_TABLES = ("base", "sweep")
# Every point's RunConfig is built up front, so a mistyped grid must not exhaust memory first.
MAX_POINTS = 1_000_000


class SweepConfigError(ConfigError):
    """Invalid, unreadable or missing sweep file, or an invalid point of the sweep."""


@dataclass(frozen=True)
class SweepPoint:
    """One configuration of a sweep.

    Attributes
    ----------
    index : int
        Position of the point in the sweep, from 0.
    values : dict
        Swept parameter path to the value of this point, in the order of ``[sweep]``.
    document : dict
        The run configuration as parsed TOML (``[problem]``, ``[truncation]``,
        ``[solver]`` tables), the input of :func:`hierarchy.config.parse_config`.
    config : RunConfig
        The validated configuration.
    config_json : str
        Canonical JSON of ``config``; see :func:`canonical_config_json`.
    point_id : str
        SHA-256 of ``config_json`` in hexadecimal.
    """

    index: int
    values: dict
    document: dict
    config: RunConfig
    config_json: str
    point_id: str

    def describe(self) -> str:
        """Return the swept values as ``path = value`` pairs, as written in a TOML file."""
        return ", ".join(f"{path} = {format_value(value)}" for path, value in self.values.items())


@dataclass(frozen=True)
class SweepSpec:
    """An expanded sweep: the base document, the swept parameters and every validated point.

    ``base_directory`` is the absolute directory against which relative
    paths of the points were resolved (the sweep file's directory), or
    ``None`` when the sweep was parsed without a source file.
    """

    source: str | None
    mode: str
    parameters: tuple
    base: dict
    points: tuple
    base_directory: str | None = None

    def to_dict(self) -> dict:
        """Return the sweep as plain JSON types: source, base directory, mode, parameters, base and the points."""
        return {
            "source": self.source,
            "base_directory": self.base_directory,
            "mode": self.mode,
            "parameters": list(self.parameters),
            "base": json_safe(self.base),
            "points": [
                {"index": point.index, "point_id": point.point_id, "values": json_safe(point.values)}
                for point in self.points
            ],
        }


def json_safe(value):
    """Convert tuples to lists and non-finite floats to the strings ``"inf"``, ``"-inf"`` and ``"nan"``.

    Strict JSON has no infinity, and ``d = inf`` is a valid dimension.
    """
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return _non_finite_name(value)
    return value


def _non_finite_name(value: float) -> str:
    """Return the TOML spelling of a non-finite float: ``nan``, ``inf`` or ``-inf``."""
    if math.isnan(value):
        return "nan"
    return "inf" if value > 0 else "-inf"


def format_value(value) -> str:
    """Write a swept value the way TOML spells it: ``inf``, ``1.5``, ``"rodas4"``."""
    if isinstance(value, float) and not math.isfinite(value):
        return _non_finite_name(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(item) for item in value) + "]"
    return repr(value)


def canonical_config_json(config: RunConfig) -> str:
    """Return the canonical JSON text of a run configuration, the input of the point id.

    Every option is written, defaults included, so that leaving a key out
    and writing its default give the same text. Keys are sorted, there is no
    whitespace, non-finite floats are strings (``d = inf`` becomes
    ``"inf"``) and the ``source`` file name is left out.
    """
    tables = config.to_dict()
    tables.pop("source", None)
    return json.dumps(json_safe(tables), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def config_point_id(config_json: str) -> str:
    """Return the SHA-256 in hexadecimal of a canonical configuration text."""
    return hashlib.sha256(config_json.encode("utf-8")).hexdigest()


def load_sweep(path) -> SweepSpec:
    """Read, expand and validate the sweep file at ``path``.

    Raises
    ------
    SweepConfigError
        When the file is missing, unreadable or not valid TOML, or as
        :func:`parse_sweep` does.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise SweepConfigError(f"sweep file not found: {path}") from None
    except IsADirectoryError:
        raise SweepConfigError(f"sweep path {path} is a directory, expected a TOML file") from None
    except OSError as error:
        raise SweepConfigError(f"failed to read sweep file {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise SweepConfigError(f"{path}: invalid TOML: the file is not UTF-8 ({error.reason} at byte {error.start})") from None
    except tomllib.TOMLDecodeError as error:
        raise SweepConfigError(f"{path}: invalid TOML: {error}") from None
    return parse_sweep(document, source=str(path))


def parse_sweep(document: dict, source: str | None = None) -> SweepSpec:
    """Expand a parsed sweep document into points and validate every point.

    ``source`` names the document in error messages (usually the file path).

    Raises
    ------
    SweepConfigError
        On an unknown table or parameter path, a swept value that is not a
        non-empty list, or lists of different lengths in zip mode. Also on
        an invalid point, with a message that names the point, its values
        and the field, and on two points with the same configuration.
    """
    prefix = f"{source}: " if source else ""
    if not isinstance(document, dict):
        raise SweepConfigError(f"{prefix}the sweep file must be a table, got {type(document).__name__}")
    for name in document:
        if name not in SWEEP_TABLES:
            raise SweepConfigError(
                f"{prefix}unknown table [{name}]. A sweep file has the tables [base] (with [base.problem], "
                "[base.truncation], [base.solver]) and [sweep]"
            )

    base = document.get("base", {})
    if not isinstance(base, dict):
        raise SweepConfigError(f"{prefix}base must be a table [base], got {base!r}")
    for name in base:
        if name not in FIELD_TYPES:
            raise SweepConfigError(f"{prefix}unknown table [base.{name}]. Allowed tables: {', '.join(FIELD_TYPES)}")
    sweep_table = document.get("sweep")
    if not isinstance(sweep_table, dict):
        raise SweepConfigError(
            f'{prefix}missing table [sweep], which lists the values to try, e.g. "problem.a" = [0.5, 1.0]'
        )

    mode = sweep_table.get("mode", "grid")
    if mode not in SWEEP_MODES:
        raise SweepConfigError(f"{prefix}sweep.mode = {mode!r} is invalid: choose one of {list(SWEEP_MODES)}")
    axes = _read_axes({key: value for key, value in sweep_table.items() if key != "mode"}, prefix)
    combinations = _combine(axes, mode, prefix)

    # Relative paths are resolved against the sweep file's directory, as `hierarchy run` does.
    base_directory = Path(source).resolve().parent if source else None
    points = []
    index_of_id = {}
    for index, combination in enumerate(combinations):
        values = dict(zip(axes, combination))
        point = _build_point(index, base, values, prefix, base_directory)
        if point.point_id in index_of_id:
            other = index_of_id[point.point_id]
            raise SweepConfigError(
                f"{prefix}sweep points {other} and {index} ({point.describe()}) have the same configuration; "
                "remove the repeated value"
            )
        index_of_id[point.point_id] = index
        points.append(point)

    return SweepSpec(
        source=source,
        mode=mode,
        parameters=tuple(axes),
        base=copy.deepcopy(base),
        points=tuple(points),
        base_directory=None if base_directory is None else str(base_directory),
    )


def _flatten(table: dict, prefix_path: str = "") -> list:
    """List the ``(dotted path, value)`` pairs of a table whose subtables also name paths."""
    pairs = []
    for key, value in table.items():
        path = f"{prefix_path}{key}"
        if isinstance(value, dict):
            pairs.extend(_flatten(value, path + "."))
        else:
            pairs.append((path, value))
    return pairs


def _read_axes(table: dict, prefix: str) -> dict:
    """Check the parameter paths and value lists of ``[sweep]`` and return path to list of values."""
    axes = {}
    for path, values in _flatten(table):
        parts = path.split(".")
        if len(parts) != 2 or parts[0] not in FIELD_TYPES:
            raise SweepConfigError(
                f'{prefix}unknown parameter path "{path}" in [sweep]: a path is table.key with the table one of '
                f'{", ".join(FIELD_TYPES)}, e.g. "problem.a"'
            )
        table_name, key = parts
        if key not in FIELD_TYPES[table_name]:
            raise SweepConfigError(
                f'{prefix}unknown parameter path "{path}" in [sweep]. Allowed keys in [{table_name}]: '
                f"{', '.join(FIELD_TYPES[table_name])}"
            )
        if path in axes:
            raise SweepConfigError(f'{prefix}the parameter path "{path}" is listed twice in [sweep]')
        if not isinstance(values, list) or not values:
            raise SweepConfigError(
                f'{prefix}sweep."{path}" = {format_value(values)} is invalid: expected a non-empty list of values'
            )
        axes[path] = values
    if not axes:
        raise SweepConfigError(
            f'{prefix}the table [sweep] lists no parameters; add at least one, e.g. "problem.a" = [0.5, 1.0]'
        )
    return axes


def _combine(axes: dict, mode: str, prefix: str) -> list:
    """Return the value tuples of every point: the Cartesian product, or the lists zipped."""
    lengths = {path: len(values) for path, values in axes.items()}
    if mode == "zip":
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{path} has {length}" for path, length in lengths.items())
            raise SweepConfigError(
                f'{prefix}mode = "zip" needs lists of the same length, but {listed} values; '
                'make them equal or use mode = "grid"'
            )
        return list(zip(*axes.values()))

    count = math.prod(lengths.values())
    if count > MAX_POINTS:
        raise SweepConfigError(
            f"{prefix}the grid has {count} points, more than the maximum of {MAX_POINTS}; "
            "split it into several sweeps"
        )
    return list(itertools.product(*axes.values()))


def _build_point(index: int, base: dict, values: dict, prefix: str, base_directory: Path | None) -> SweepPoint:
    """Apply the swept values to a copy of ``base`` and validate the result as a run configuration.

    A relative ``problem.spectrum_file`` is replaced in the point's document
    by its path under ``base_directory``, so the point reads the same file
    whatever the working directory of the process that computes it.
    """
    document = {}
    for table, entries in base.items():
        document[table] = copy.deepcopy(entries) if isinstance(entries, dict) else entries
    for path, value in values.items():
        table, key = path.split(".")
        section = document.setdefault(table, {})
        if not isinstance(section, dict):
            # parse_config reports the malformed base table below.
            continue
        section[key] = copy.deepcopy(value)
    _resolve_spectrum_file(document, base_directory)

    described = ", ".join(f"{path} = {format_value(value)}" for path, value in values.items())
    try:
        config = parse_config(document)
    except ConfigError as error:
        raise SweepConfigError(f"{prefix}sweep point {index} ({described}) is invalid: {error}") from None

    config_json = canonical_config_json(config)
    return SweepPoint(
        index=index,
        values=dict(values),
        document=document,
        config=config,
        config_json=config_json,
        point_id=config_point_id(config_json),
    )


def _resolve_spectrum_file(document: dict, base_directory: Path | None) -> None:
    """Replace a relative ``spectrum_file`` of a file spectrum by its path under ``base_directory``."""
    problem = document.get("problem")
    if base_directory is None or not isinstance(problem, dict) or problem.get("spectrum") != "file":
        return
    spectrum_file = problem.get("spectrum_file")
    # parse_config reports a spectrum_file that is not a string.
    if isinstance(spectrum_file, str) and not Path(spectrum_file).is_absolute():
        problem["spectrum_file"] = str(base_directory / spectrum_file)
