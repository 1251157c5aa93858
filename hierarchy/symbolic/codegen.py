"""Generate the numerical loss and drive kernels of a model from its SymPy derivation.

The generated module is plain Python source, printed from the expressions of a
:class:`~hierarchy.symbolic.hierarchy_equations.HierarchyEquations` with
SymPy's code printers. It contains

* ``loss(q1, m1, rho1)``: the population loss for numpy arrays or scalars;
* ``loss_kernel(q1, m1, rho1)``: the same loss, compiled with Numba for scalars;
* ``drive(q1, m1, rho1)``: compiled with Numba against
  :data:`hierarchy.kernel_types.DRIVE_SIGNATURE`, returning
  ``(alpha, beta, dalpha_dq1, dalpha_dm1, dbeta_dq1, dbeta_dm1)``;
* ``loss_rounding_bound(q1, m1, rho1, statistics_operations)``: a bound on
  the rounding error of ``loss``, from the absolute values of the terms of
  the loss expression (see :func:`magnitude_expression`).

The output text depends only on the expressions and the SymPy version, so a
regenerated file can be compared with the committed one. Run

    python -m hierarchy.symbolic.codegen

to regenerate ``hierarchy/_generated/phase_retrieval.py``.

Modules of user models (:class:`hierarchy.model.SingleIndexModel`) are not
committed. :func:`load_model_module` writes each one once into a cache folder
outside the package, named by a hash of the model, and imports it from there.
Numba caches the compiled kernels next to it, so a later process with the
same model neither regenerates nor recompiles. The folder must be outside the
package because :mod:`hierarchy.numba_cache` hashes every ``.py`` file of the
package and drops all compiled kernels when that hash changes.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import sympy
from sympy.printing.codeprinter import PrintMethodNotImplementedError
from sympy.printing.numpy import SciPyPrinter
from sympy.printing.pycode import PythonCodePrinter

from hierarchy.symbolic import hierarchy_equations
from hierarchy.symbolic.hierarchy_equations import HierarchyEquations, derive_phase_retrieval

__all__ = [
    "CACHE_DIRECTORY_VARIABLE",
    "PHASE_RETRIEVAL_MODULE_PATH",
    "CachedModelModule",
    "generate_model_module",
    "load_model_module",
    "main",
    "model_cache_directory",
    "write_phase_retrieval_module",
]

logger = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
PHASE_RETRIEVAL_MODULE_PATH = PACKAGE_ROOT / "_generated" / "phase_retrieval.py"

CACHE_DIRECTORY_VARIABLE = "HIERARCHY_CACHE_DIR"
"""Environment variable that overrides the folder of generated user-model modules."""

# First line of a cached module: it ties the file to the key in its name.
_CACHE_KEY_LINE = "# Model cache key: {key}"
_CACHE_KEY_PATTERN = re.compile(r"[0-9a-f]{64}")

# Argument names of the generated functions, standing for q_1, m_1 and rho_1.
q1, m1, rho1 = sympy.symbols("q1 m1 rho1", real=True)
_ARGUMENTS = (q1, m1, rho1)
_ARGUMENT_LIST = "q1, m1, rho1"

# Outputs of drive(), in the order fixed by hierarchy.kernel_types.
_DRIVE_OUTPUTS = ("alpha", "beta", "dalpha_dq1", "dalpha_dm1", "dbeta_dq1", "dbeta_dm1")


def _to_arguments(expression: sympy.Expr, name: str) -> sympy.Expr:
    """Rewrite ``q[1], m[1], rho[1]`` as the argument symbols ``q1, m1, rho1``.

    Raises ValueError if anything else is left, because a kernel of the level-one
    statistics cannot depend on a higher level or on an unset model parameter.
    """
    level_one = {
        hierarchy_equations.q[1]: q1,
        hierarchy_equations.m[1]: m1,
        hierarchy_equations.rho[1]: rho1,
    }
    rewritten = sympy.sympify(expression).xreplace(level_one)
    # free_symbols lists an Indexed q[2] together with the label q of its base, so report only the former.
    indexed = rewritten.atoms(sympy.Indexed)
    index_labels = {entry.base.label for entry in indexed}
    unexpected = indexed | (rewritten.free_symbols - indexed - index_labels - set(_ARGUMENTS))
    if unexpected:
        names = ", ".join(sorted(str(symbol) for symbol in unexpected))
        raise ValueError(
            f"cannot generate code for {name} = {expression}: it depends on {names}, "
            "but kernels take only q_1, m_1 and rho_1; substitute numerical values for model parameters first"
        )
    return rewritten


# Integers beyond 2^53 are not exact as floats anyway, and beyond 2^63 Numba
# cannot type them as int64 literals at all.
MAX_EXACT_INTEGER = 2**53


def _large_rationals_as_floats(expression: sympy.Expr) -> sympy.Expr:
    """Replace every rational constant with a numerator or denominator above 2^53 by its float value.

    A user's coefficient of 1e9 in a cubic student gives products such as
    2.25e19 in the moments, which the generated kernels must not print as
    integer literals.
    """
    large = {
        number: sympy.Float(number, 17)
        for number in expression.atoms(sympy.Rational)
        if abs(number.p) > MAX_EXACT_INTEGER or number.q > MAX_EXACT_INTEGER
    }
    return expression.xreplace(large) if large else expression


def _print_code(printer: PythonCodePrinter, expression: sympy.Expr, name: str) -> str:
    """Print one expression as a Python expression, with constants as float literals.

    Numba needs every output of ``drive`` to be a float, and an integer constant
    such as ``dalpha_dq1 = -3`` would otherwise print as an int literal.
    """
    if expression.is_Number:
        return repr(float(expression))
    try:
        return printer.doprint(_large_rationals_as_floats(expression))
    except PrintMethodNotImplementedError as error:
        raise ValueError(f"cannot generate code for {name} = {expression}: {error}") from error


def magnitude_expression(expression: sympy.Expr) -> sympy.Expr:
    """Return the expression with every constant and symbol replaced by its absolute value.

    Every subtraction becomes an addition, so for a polynomial the result is
    the sum of the absolute values of its terms, such as
    ``m1**2 + 3/4 q1**2 + 1/2 |q1 rho1| + 3/4 rho1**2`` for phase retrieval.
    Floating-point evaluation perturbs each operation by a relative error of
    at most the unit roundoff ``u``. The computed value therefore differs
    from the exact one by at most ``γ_N = N u / (1 - N u)`` times this
    magnitude, with ``N`` from :func:`rounded_operations`. A function other
    than ``+``, ``*`` and integer powers is kept whole inside ``Abs``.
    """
    if not expression.free_symbols or expression.is_Symbol:
        return sympy.Abs(expression)
    if expression.is_Add or expression.is_Mul:
        return expression.func(*(magnitude_expression(argument) for argument in expression.args))
    if expression.is_Pow and expression.exp.is_Integer and expression.exp > 0:
        return magnitude_expression(expression.base) ** expression.exp
    return sympy.Abs(expression)


def rounded_operations(expression: sympy.Expr) -> int:
    """Count the rounded floating-point operations on the longest path from a leaf to the value of ``expression``.

    A sum or product of ``n`` arguments adds ``n - 1`` operations, a power,
    a function or a non-integer constant (``3/4``, ``sqrt(2)``, a float)
    adds one, and a factor ``-1`` adds none because negation is exact.
    Printed code evaluates the same tree, so the count bounds the operations
    that any one input passes through.

    NOTE: the count takes powers and functions as correctly rounded. The C
    library's ``pow`` and ``exp`` need not be, so a path through them may
    carry about one rounding more than counted.
    """
    if expression.is_Integer or expression.is_Symbol:
        return 0
    if expression.is_Number or not expression.free_symbols:
        return 1
    if expression.is_Mul:
        factors = [argument for argument in expression.args if argument != -1]
        return len(factors) - 1 + max(rounded_operations(factor) for factor in factors)
    if expression.is_Add:
        return len(expression.args) - 1 + max(rounded_operations(argument) for argument in expression.args)
    return 1 + max(rounded_operations(argument) for argument in expression.args)


def _input_sensitivity_expression(loss: sympy.Expr) -> sympy.Expr:
    """Return ``sum_x |x dF/dx|`` over ``x = q1, m1, rho1`` as a magnitude expression.

    Relative errors of at most ``δ`` in the three arguments change ``F`` by
    at most ``δ`` times this sum, to first order in ``δ``.
    """
    terms = (magnitude_expression(sympy.expand(argument * sympy.diff(loss, argument))) for argument in _ARGUMENTS)
    return sympy.Add(*terms)


def _import_lines(*printers: PythonCodePrinter) -> list[str]:
    """Collect the ``import`` statements that the printed code needs."""
    modules = {"numba"}
    for printer in printers:
        modules.update(printer.module_imports)
    return [f"import {module}" for module in sorted(modules)]


def _header_lines(equations: HierarchyEquations, generator: str, regenerate_command: str) -> list[str]:
    """Build the header comment: provenance and the SymPy expressions behind the code."""
    sources = [
        ("F", equations.loss),
        ("F_q", equations.F_q),
        ("F_m", equations.F_m),
        ("alpha", equations.alpha),
        ("beta", equations.beta),
        ("dalpha_dq1", equations.dalpha_dq1),
        ("dalpha_dm1", equations.dalpha_dm1),
        ("dbeta_dq1", equations.dbeta_dq1),
        ("dbeta_dm1", equations.dbeta_dm1),
        ("dm_k/dt", equations.dm_k),
        ("dq_k/dt", equations.dq_k),
    ]
    width = max(len(label) for label, _ in sources)
    lines = [
        f"# This file is generated by {generator}.",
        "# Do not edit it by hand. Regenerate it with:",
        f"#     {regenerate_command}",
        "#",
        "# SymPy expressions it is printed from, in the statistics",
        "# q[j] = w^T Sigma^j w, m[j] = w^T Sigma^j w*, rho[j] = w*^T Sigma^j w*:",
    ]
    lines += [f"#   {label.ljust(width)} = {sympy.sstr(expression)}" for label, expression in sources]
    return lines


def generate_model_module(
    equations: HierarchyEquations,
    *,
    description: str,
    generator: str,
    regenerate_command: str,
) -> str:
    """Generate the source text of a kernel module for one model.

    Parameters
    ----------
    equations : HierarchyEquations
        Derivation of the model. ``loss``, ``alpha``, ``beta`` and their
        derivatives must depend on ``q[1], m[1], rho[1]`` only.
    description : str
        Short model description for the module docstring, for instance
        ``"phase retrieval, student (w·x)^2 and teacher (w*·x)^2"``.
    generator : str
        Qualified name of the function that writes the module, for the header.
    regenerate_command : str
        Shell command that regenerates the module, for the header.

    Returns
    -------
    str
        The module source, ending with a newline.

    Raises
    ------
    ValueError
        If an expression depends on other symbols or uses a function that the
        SymPy code printers cannot print.
    """
    # Scalar kernels use the math module, which Numba compiles. The array loss
    # uses numpy and scipy.special so that it accepts numpy arrays.
    scalar_printer = PythonCodePrinter({"fully_qualified_modules": True})
    array_printer = SciPyPrinter({"fully_qualified_modules": True})

    loss = _to_arguments(equations.loss, "loss")
    loss_array_code = _print_code(array_printer, loss, "loss")
    loss_scalar_code = _print_code(scalar_printer, loss, "loss")
    drive_code = {
        output: _print_code(scalar_printer, _to_arguments(getattr(equations, output), output), output)
        for output in _DRIVE_OUTPUTS
    }

    loss_text = sympy.sstr(loss)
    magnitude = magnitude_expression(loss)
    sensitivity = _input_sensitivity_expression(loss)
    magnitude_code = _print_code(array_printer, magnitude, "the magnitude of the loss")
    sensitivity_code = _print_code(array_printer, sensitivity, "the input sensitivity of the loss")
    operations = rounded_operations(loss)
    alpha_text = sympy.sstr(_to_arguments(equations.alpha, "alpha"))
    beta_text = sympy.sstr(_to_arguments(equations.beta, "beta"))

    lines = _header_lines(equations, generator, regenerate_command)
    lines += [
        f'"""Loss and drive kernels of {description}.',
        "",
        "The arguments are the level-one summary statistics q1 = w^T Sigma w,",
        "m1 = w^T Sigma w* and rho1 = w*^T Sigma w*.",
        '"""',
        "",
        *_import_lines(scalar_printer, array_printer),
        "",
        "from hierarchy.kernel_types import DRIVE_SIGNATURE",
        "",
        "",
        f"def loss({_ARGUMENT_LIST}):",
        '    """Evaluate the population loss on numpy arrays or scalars.',
        "",
        f"    F(q1, m1; rho1) = {loss_text}",
        '    """',
        f"    return {loss_array_code}",
        "",
        "",
        "@numba.njit(cache=True)",
        f"def loss_kernel({_ARGUMENT_LIST}):",
        '    """Evaluate the population loss on float scalars, in compiled code.',
        "",
        f"    F(q1, m1; rho1) = {loss_text}",
        '    """',
        f"    return {loss_scalar_code}",
        "",
        "",
        f"def loss_rounding_bound({_ARGUMENT_LIST}, statistics_operations):",
        '    """Bound the rounding error of loss(q1, m1, rho1) against F at the exact statistics.',
        "",
        "    statistics_operations counts the rounded operations behind each of q1,",
        "    m1 and rho1 (0 for exact inputs, about d for a sum over d coordinates",
        "    of one sign), so that each carries a relative error of at most",
        "    gamma(statistics_operations), with gamma(n) = n u / (1 - n u) and u the",
        "    unit roundoff. To first order in u the error is at most",
        "",
        f"        gamma({operations}) magnitude + gamma(statistics_operations) sensitivity,",
        "",
        f"    where {operations} counts the rounded operations on the longest path of F,",
        f"    magnitude = {sympy.sstr(magnitude)}",
        "    bounds the evaluation error, and the sum of |x dF/dx| over x = q1, m1, rho1,",
        f"    sensitivity = {sympy.sstr(sensitivity)},",
        "    bounds the effect of the input errors.",
        '    """',
        "    unit_roundoff = 2.0**-53",
        f"    evaluation = {operations} * unit_roundoff / (1.0 - {operations} * unit_roundoff)",
        "    inputs = statistics_operations * unit_roundoff / (1.0 - statistics_operations * unit_roundoff)",
        f"    magnitude = {magnitude_code}",
        f"    sensitivity = {sensitivity_code}",
        "    return evaluation * magnitude + inputs * sensitivity",
        "",
        "",
        "@numba.njit(DRIVE_SIGNATURE, cache=True)",
        f"def drive({_ARGUMENT_LIST}):",
        '    """Evaluate the drive scalars of the flow dw/dt = alpha Sigma w + beta Sigma w*.',
        "",
        f"    alpha = -2 F_q = {alpha_text} and beta = -F_m = {beta_text}.",
        f"    Returns ({', '.join(_DRIVE_OUTPUTS)}).",
        '    """',
    ]
    lines += [f"    {output} = {drive_code[output]}" for output in _DRIVE_OUTPUTS]
    lines.append(f"    return ({', '.join(_DRIVE_OUTPUTS)})")
    return "\n".join(lines) + "\n"


def write_phase_retrieval_module(path: str | Path = PHASE_RETRIEVAL_MODULE_PATH) -> Path:
    """Derive phase retrieval and write its kernel module to ``path``.

    The default path is ``hierarchy/_generated/phase_retrieval.py`` inside the
    package, the module that :class:`hierarchy.model.PhaseRetrieval` imports.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    source = generate_model_module(
        derive_phase_retrieval(),
        description="phase retrieval, student (w·x)^2 and teacher (w*·x)^2",
        generator="hierarchy.symbolic.codegen.write_phase_retrieval_module",
        regenerate_command="python -m hierarchy.symbolic.codegen",
    )
    path = Path(path)
    path.write_text(source, encoding="utf-8", newline="\n")
    return path


def model_cache_directory() -> Path:
    """Return the folder of generated user-model modules.

    It is ``$HIERARCHY_CACHE_DIR`` when that variable is set and not empty,
    else ``$XDG_CACHE_HOME/hierarchy/models``, else ``~/.cache/hierarchy/models``.

    Raises
    ------
    ValueError
        If the folder lies inside the package, where a generated file would
        change the source hash of :mod:`hierarchy.numba_cache` and drop every
        compiled kernel.
    """
    configured = os.environ.get(CACHE_DIRECTORY_VARIABLE)
    if configured:
        directory = Path(configured).expanduser()
    else:
        cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        directory = Path(cache_home).expanduser() / "hierarchy" / "models"
    directory = directory.resolve()
    if directory == PACKAGE_ROOT or PACKAGE_ROOT in directory.parents:
        raise ValueError(
            f"{CACHE_DIRECTORY_VARIABLE} = {directory} is invalid: generated model modules must live outside "
            f"the package folder {PACKAGE_ROOT}; choose another folder"
        )
    return directory


@dataclass(frozen=True)
class CachedModelModule:
    """A generated model module imported from the cache folder.

    Attributes
    ----------
    module : types.ModuleType
        The imported module, with ``loss``, ``loss_kernel``, ``loss_rounding_bound`` and ``drive``.
    path : pathlib.Path
        Its file.
    generated : bool
        Whether this call wrote the file (False when an earlier process or
        call had written it).
    """

    module: ModuleType
    path: Path
    generated: bool


# Modules already imported in this process, by path, so that each is executed and compiled once.
_LOADED_MODULES: dict[Path, CachedModelModule] = {}


def load_model_module(cache_key: str, generate_source: Callable[[], str]) -> CachedModelModule:
    """Import the generated module of a model from the cache, writing it first if it is missing.

    The file is ``model_<cache_key>.py`` in :func:`model_cache_directory`.
    ``generate_source`` is called only when the file is missing or does not
    start with the line that names ``cache_key``. A new file is written to a
    temporary name and linked into place, so a concurrent process never
    reads a partial file. An existing file is never replaced by an
    identical one, because a new time stamp would make Numba recompile.

    Parameters
    ----------
    cache_key : str
        SHA-256 hex digest of everything the module text depends on.
    generate_source : callable
        Returns the module text, for instance from :func:`generate_model_module`.

    Returns
    -------
    CachedModelModule

    Raises
    ------
    ValueError
        If ``cache_key`` is not 64 lowercase hex digits or the cache folder is invalid.
    OSError
        If the cache folder cannot be created or written.
    """
    if not _CACHE_KEY_PATTERN.fullmatch(cache_key):
        raise ValueError(f"cache_key = {cache_key!r} is invalid: expected a SHA-256 hex digest of 64 lowercase digits")
    path = model_cache_directory() / f"model_{cache_key}.py"
    if path in _LOADED_MODULES:
        return _LOADED_MODULES[path]

    key_line = _CACHE_KEY_LINE.format(key=cache_key)
    generated = False
    if not _starts_with(path, key_line):
        if path.exists():
            logger.warning("cached model module %s does not start with its key line; regenerating it", path)
        _write_module(path, key_line + "\n" + generate_source(), replace=path.exists())
        generated = True
        logger.info("generated model module %s", path)

    try:
        module = _import_file(path, f"hierarchy_model_{cache_key[:16]}")
    except (SyntaxError, ImportError, AttributeError) as error:
        if generated:
            raise
        logger.warning("cached model module %s failed to import (%s); regenerating it", path, error)
        _write_module(path, key_line + "\n" + generate_source(), replace=True)
        generated = True
        module = _import_file(path, f"hierarchy_model_{cache_key[:16]}")

    loaded = CachedModelModule(module=module, path=path, generated=generated)
    _LOADED_MODULES[path] = loaded
    return loaded


def _starts_with(path: Path, first_line: str) -> bool:
    try:
        with path.open(encoding="utf-8") as handle:
            return handle.readline().rstrip("\n") == first_line
    except (OSError, UnicodeDecodeError):
        return False


def _write_module(path: Path, source: str, *, replace: bool) -> None:
    """Write ``source`` to ``path`` atomically; keep an existing file unless ``replace`` is set."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary_name = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
    temporary = Path(temporary_name)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(source)
        if replace:
            os.replace(temporary, path)
            return
        try:
            # link() fails if the file exists, so the first writer wins and later writers keep its time stamp.
            os.link(temporary, path)
        except FileExistsError:
            pass
        except OSError:
            # Some file systems have no hard links; fall back to a rename, which may replace a concurrent identical file.
            if not path.exists():
                os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _import_file(path: Path, module_name: str) -> ModuleType:
    """Import the module at ``path`` under ``module_name``.

    This executes a file that this package generated from SymPy expressions
    of a whitelisted parse tree (:mod:`hierarchy.symbolic.expression_parser`),
    never user text. As with any Python cache, a user with write access to
    the cache folder can change what runs here.
    """
    specification = importlib.util.spec_from_file_location(module_name, path)
    if specification is None or specification.loader is None:
        raise ImportError(f"cannot import the model module {path}")
    module = importlib.util.module_from_spec(specification)
    sys.modules[module_name] = module
    try:
        specification.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    for name in ("loss", "loss_kernel", "loss_rounding_bound", "drive"):
        if not hasattr(module, name):
            del sys.modules[module_name]
            raise AttributeError(f"the model module {path} has no function {name}")
    return module


def main(argv: Sequence[str] | None = None) -> int:
    """Regenerate the phase-retrieval kernel module from the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m hierarchy.symbolic.codegen",
        description="Regenerate the phase-retrieval loss and drive kernels from the SymPy derivation.",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=PHASE_RETRIEVAL_MODULE_PATH,
        help=f"path of the generated module (default: {PHASE_RETRIEVAL_MODULE_PATH})",
    )
    arguments = parser.parse_args(argv)
    path = write_phase_retrieval_module(arguments.output)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
