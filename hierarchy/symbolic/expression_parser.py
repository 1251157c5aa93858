"""Parse activation expressions in one variable ``z`` into SymPy, through a whitelist.

Student activations ``σ(z)`` and teacher activations ``g(z)`` come from
configuration files and the command line as strings such as
``"tanh(z)"`` or ``"z**3 - 3*z"``. The string is parsed with Python's
:mod:`ast` in expression mode, and the SymPy expression is built node by node
from the syntax tree. The text itself is never evaluated: no ``eval``, no
``sympify`` and no ``parse_expr``.

Allowed are

* number literals (integers and decimals, at most :data:`MAX_LITERAL` in size);
* the variable ``z`` and the constants ``pi`` and ``E``;
* ``+``, ``-``, ``*``, ``/``, unary ``+`` and ``-``, and parentheses;
* ``**`` with a literal exponent that is a non-negative integer or a fraction
  with denominator at most :data:`MAX_EXPONENT_DENOMINATOR`, at most
  :data:`MAX_EXPONENT`;
* one-argument calls of ``tanh, erf, exp, sin, cos, relu, sigmoid, abs, sqrt``,
  with ``relu(x) = max(x, 0)`` and ``sigmoid(x) = 1 / (1 + exp(-x))``.

Everything else is rejected with :class:`ExpressionError` before any SymPy
object is built. Limits on the input length, the syntax-tree depth, the degree
and the size of constants keep every accepted input cheap to parse and to
derive with.

:func:`validate_activation` applies the same whitelist to an expression that
is already a SymPy object, for callers that build activations in Python.
"""

from __future__ import annotations

import ast
import math
from fractions import Fraction

import sympy
from sympy.printing.str import StrPrinter

__all__ = [
    "ALLOWED_FUNCTIONS",
    "ExpressionError",
    "MAX_DEGREE",
    "MAX_DEPTH",
    "MAX_EXPONENT",
    "MAX_EXPONENT_DENOMINATOR",
    "MAX_LENGTH",
    "MAX_LITERAL",
    "format_activation",
    "parse_activation",
    "validate_activation",
    "z",
]

# The variable of every activation.
z = sympy.Symbol("z", real=True)

MAX_LENGTH = 500
"""Maximum number of characters of an expression string."""

MAX_DEPTH = 50
"""Maximum nesting depth of expression nodes in the syntax tree."""

MAX_EXPONENT = 10
"""Maximum exponent of one ``**``."""

MAX_EXPONENT_DENOMINATOR = 10
"""Maximum denominator of a fractional exponent such as ``1/2``."""

MAX_LITERAL = 10**9
"""Maximum absolute value of a number literal."""

MAX_DEGREE = 12
"""Maximum degree of an expression, counting each function call as degree 1.

Above about 12 the integer coefficients of the Wick moments of the squared
loss exceed 64-bit integers, and the generated kernels fail to compile.

The loss derivation expands ``(σ(u) - g(v))^2`` into monomials, so a higher
degree makes the Wick moments slow without making a sensible activation.
"""

MAX_TOTAL_POWER = 12
"""Maximum exponent after SymPy merges nested powers, as in ``(x**10)**2 = x**20``."""

MAX_CONSTANT_DIGITS = 300
"""Maximum number of decimal digits in the numerator or denominator of a rational constant."""

# Functions of the whitelist, each a SymPy builder of one argument.
ALLOWED_FUNCTIONS = {
    "tanh": sympy.tanh,
    "erf": sympy.erf,
    "exp": sympy.exp,
    "sin": sympy.sin,
    "cos": sympy.cos,
    "relu": lambda argument: sympy.Max(argument, 0),
    "sigmoid": lambda argument: 1 / (1 + sympy.exp(-argument)),
    "abs": sympy.Abs,
    "sqrt": sympy.sqrt,
}

_CONSTANTS = {"pi": sympy.pi, "E": sympy.E}

_ALLOWED_SUMMARY = (
    "allowed are numbers, the variable z, the constants pi and E, + - * / and ** with a literal "
    f"exponent (a non-negative integer or fraction, at most {MAX_EXPONENT}), unary minus, parentheses "
    f"and the functions {', '.join(ALLOWED_FUNCTIONS)} with one argument each"
)

# Readable names of syntax that the whitelist rejects, for the error message.
_REJECTED_SYNTAX = {
    ast.Attribute: "attribute access (x.name) is not allowed",
    ast.Subscript: "subscripts (x[i]) are not allowed",
    ast.Lambda: "lambda expressions are not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.Compare: "comparisons are not allowed",
    ast.BoolOp: "boolean operators (and, or) are not allowed",
    ast.IfExp: "conditional expressions (x if c else y) are not allowed",
    ast.NamedExpr: "assignment expressions (:=) are not allowed",
    ast.List: "lists are not allowed",
    ast.Tuple: "tuples are not allowed",
    ast.Set: "sets are not allowed",
    ast.Dict: "dictionaries are not allowed",
    ast.Starred: "starred arguments (*x) are not allowed",
    ast.JoinedStr: "strings are not allowed",
    ast.FormattedValue: "strings are not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
    ast.Slice: "slices are not allowed",
}

_BINARY_OPERATORS = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.Pow: "**",
}

# Sample points of the real-valuedness check: both signs, zero and a few scales.
_SAMPLE_POINTS = (-3.7, -1.3, -0.5, 0.0, 0.6, 2.2)


class ExpressionError(ValueError):
    """Invalid activation expression, with the reason and what is allowed."""


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_activation(text: str) -> sympy.Expr:
    """Parse an activation string in the variable ``z`` into a SymPy expression.

    The string is checked for type, length, characters and bracket nesting,
    parsed by :func:`ast.parse` in expression mode, checked for depth, and converted
    node by node through the whitelist of this module. The result must be
    real and finite at a few sample points of the real line.

    Parameters
    ----------
    text : str
        Expression such as ``"tanh(z)"``, ``"relu(z) - 0.5*z**2"`` or ``"z**3 - 3*z"``.

    Returns
    -------
    sympy.Expr
        The expression in the module symbol :data:`z`.

    Raises
    ------
    ExpressionError
        If the text is not a string, is longer than :data:`MAX_LENGTH`, has
        invalid syntax, or brackets or a tree nested deeper than :data:`MAX_DEPTH`, uses anything
        outside the whitelist, exceeds a size limit, or is not real-valued.
    """
    if not isinstance(text, str):
        raise ExpressionError(f"invalid activation {text!r}: expected a string such as 'tanh(z)'")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(
            f"invalid activation {_shorten(text)!r}: it has {len(text)} characters, more than the limit of {MAX_LENGTH}"
        )
    if not text.strip():
        raise ExpressionError("invalid activation '': the expression is empty; write one such as 'tanh(z)'")
    for character in text:
        if not (character.isascii() and (character.isprintable() or character in " \t")):
            raise ExpressionError(
                f"invalid activation {_shorten(text)!r}: character {character!r} is not allowed; use ASCII only"
            )

    nesting = _parenthesis_depth(text)
    if nesting > MAX_DEPTH:
        raise ExpressionError(
            f"invalid activation {_shorten(text)!r}: its parentheses are nested {nesting} levels deep, "
            f"more than the limit of {MAX_DEPTH}"
        )

    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        reason = getattr(error, "msg", None) or str(error) or type(error).__name__
        raise ExpressionError(
            f"invalid activation {_shorten(text)!r}: invalid syntax ({reason}); write a single expression, "
            f"statements such as import are not allowed; {_ALLOWED_SUMMARY}"
        ) from None

    depth = _expression_depth(tree.body)
    if depth > MAX_DEPTH:
        raise ExpressionError(
            f"invalid activation {_shorten(text)!r}: it is nested {depth} levels deep, more than the limit of {MAX_DEPTH}"
        )

    expression, _ = _ExpressionBuilder(text).build(tree.body)
    _check_exp_nesting(expression, text)
    _check_real_valued(expression, text)
    return expression


def validate_activation(expression: sympy.Expr) -> sympy.Expr:
    """Check a SymPy activation against the whitelist and return it in the symbol :data:`z`.

    A free symbol named ``z`` with other assumptions is replaced by :data:`z`.
    The tree may contain what :func:`parse_activation` builds: numbers,
    ``pi``, ``E``, sums, products, powers with rational exponents of size at
    most :data:`MAX_TOTAL_POWER` and denominator at most
    :data:`MAX_EXPONENT_DENOMINATOR` (negative ones come from division), and
    the functions ``tanh, erf, exp, sin, cos, Max(x, 0), Abs``.

    Raises
    ------
    ExpressionError
        If the expression uses another symbol or function, or is not real-valued.
    """
    if not isinstance(expression, sympy.Expr):
        raise ExpressionError(f"invalid activation {expression!r}: expected a string or a SymPy expression")
    foreign = [symbol for symbol in expression.free_symbols if symbol.name != "z"]
    if foreign:
        names = ", ".join(sorted(str(symbol) for symbol in foreign))
        raise ExpressionError(f"invalid activation {expression}: it depends on {names}; the only variable is z")
    expression = expression.xreplace({symbol: z for symbol in expression.free_symbols})

    if sympy.count_ops(expression) > MAX_LENGTH:
        raise ExpressionError(f"invalid activation {_shorten(str(expression))}: it has more than {MAX_LENGTH} operations")
    for node in sympy.preorder_traversal(expression):
        _check_sympy_node(node, expression)
    _check_exp_nesting(expression, str(expression))
    _check_real_valued(expression, str(expression))
    return expression


def _check_sympy_node(node: sympy.Basic, expression: sympy.Expr) -> None:
    if node == z or node.is_Rational or node in (sympy.pi, sympy.E):
        return
    if isinstance(node, (sympy.Add, sympy.Mul)):
        return
    if isinstance(node, sympy.Pow):
        exponent = node.exp
        if node.base == sympy.E:
            return  # E**x is exp(x)
        if not (
            exponent.is_Rational
            and abs(exponent) <= MAX_TOTAL_POWER
            and exponent.q <= MAX_EXPONENT_DENOMINATOR
        ):
            raise ExpressionError(
                f"invalid activation {expression}: the power {node} is not allowed; exponents must be rational numbers "
                f"of size at most {MAX_TOTAL_POWER} with denominator at most {MAX_EXPONENT_DENOMINATOR}"
            )
        return
    if isinstance(node, (sympy.tanh, sympy.erf, sympy.exp, sympy.sin, sympy.cos, sympy.Abs)):
        return
    if isinstance(node, sympy.Max) and len(node.args) == 2 and sympy.Integer(0) in node.args:
        return
    raise ExpressionError(
        f"invalid activation {expression}: {node} is not allowed; allowed are rational numbers, z, pi, E, "
        "sums, products, rational powers and tanh, erf, exp, sin, cos, Max(x, 0) and Abs"
    )


def _parenthesis_depth(text: str) -> int:
    """Return the deepest nesting of brackets in ``text``, before the parser builds anything."""
    depth = deepest = 0
    for character in text:
        if character in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif character in ")]}":
            depth -= 1
    return deepest


def _expression_depth(root: ast.AST) -> int:
    """Return the nesting depth of expression nodes below ``root``, without recursion."""
    deepest = 0
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                stack.append((child, depth + 1))
    return deepest


def _check_exp_nesting(expression: sympy.Expr, text: str) -> None:
    # exp(exp(z)) has no finite Gaussian moments worth expanding, and
    # evaluating it far out exhausts memory before any check can run.
    for power in expression.atoms(sympy.exp):
        if power.args[0].has(sympy.exp):
            raise ExpressionError(
                f"invalid activation {_shorten(text)}: exp of an expression containing exp grows too fast; "
                "nest exp at most once"
            )


def _check_real_valued(expression: sympy.Expr, text: str) -> None:
    """Raise unless the activation is real and finite at the sample points.

    This catches ``sqrt(z)`` and ``z**(1/3)``, which SymPy defines as complex
    for negative ``z``, and a division by zero at ``z = 0``.
    """
    for point in _SAMPLE_POINTS:
        value = expression.xreplace({z: sympy.Float(point)}).evalf(20)
        if not (value.is_real and value.is_finite):
            raise ExpressionError(
                f"invalid activation {_shorten(text)!r}: its value at z = {point} is {value}, not a finite real number; "
                "an activation must be real for every real z (write sqrt(abs(z)) instead of sqrt(z))"
            )


class _ExpressionBuilder:
    """Convert whitelisted syntax-tree nodes to SymPy, tracking the degree of each node.

    The degree is the polynomial degree in ``z`` with every function call
    counted as degree 1, so ``tanh(z)**3 * z`` has degree 4.
    """

    def __init__(self, text: str):
        self.text = text

    def reject(self, reason: str) -> ExpressionError:
        return ExpressionError(f"invalid activation {_shorten(self.text)!r}: {reason}; {_ALLOWED_SUMMARY}")

    def build(self, node: ast.AST) -> tuple[sympy.Expr, Fraction]:
        if isinstance(node, ast.Constant):
            return self._literal(node.value), Fraction(0)
        if isinstance(node, ast.Name):
            return self._name(node.id)
        if isinstance(node, ast.UnaryOp):
            return self._unary(node)
        if isinstance(node, ast.BinOp):
            return self._binary(node)
        if isinstance(node, ast.Call):
            return self._call(node)
        raise self.reject(_REJECTED_SYNTAX.get(type(node), f"the syntax {type(node).__name__} is not allowed"))

    def _literal(self, value: object) -> sympy.Rational:
        if isinstance(value, (str, bytes)):
            raise self.reject("strings are not allowed")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.reject(f"the literal {value!r} is not allowed")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.reject(f"the literal {value!r} is not finite")
        if abs(value) > MAX_LITERAL:
            raise self.reject(f"the number literal {_shorten(repr(value), 40)} is larger than the limit of {MAX_LITERAL}")
        # A decimal literal becomes the exact rational of its shortest round-trip decimal, so 0.1 is 1/10.
        exact = Fraction(value) if isinstance(value, int) else Fraction(repr(value))
        return sympy.Rational(exact.numerator, exact.denominator)

    def _name(self, name: str) -> tuple[sympy.Expr, Fraction]:
        if name.startswith("__"):
            raise self.reject(f"the name {name!r} is not allowed: names starting with '__' are never allowed")
        if name == "z":
            return z, Fraction(1)
        if name in _CONSTANTS:
            return _CONSTANTS[name], Fraction(0)
        if name in ALLOWED_FUNCTIONS:
            raise self.reject(f"the function {name!r} must be called with one argument, as in {name}(z)")
        raise self.reject(f"unknown name {name!r}: the only variable is z and the only constants are pi and E")

    def _unary(self, node: ast.UnaryOp) -> tuple[sympy.Expr, Fraction]:
        if not isinstance(node.op, (ast.USub, ast.UAdd)):
            raise self.reject(f"the unary operator {type(node.op).__name__} is not allowed")
        operand, degree = self.build(node.operand)
        return (-operand if isinstance(node.op, ast.USub) else operand), degree

    def _binary(self, node: ast.BinOp) -> tuple[sympy.Expr, Fraction]:
        symbol = _BINARY_OPERATORS.get(type(node.op))
        if symbol is None:
            raise self.reject(f"the operator {type(node.op).__name__} is not allowed")
        if symbol == "**":
            return self._power(node)

        left, left_degree = self.build(node.left)
        right, right_degree = self.build(node.right)
        if symbol == "+":
            result, degree = left + right, max(left_degree, right_degree)
        elif symbol == "-":
            result, degree = left - right, max(left_degree, right_degree)
        elif symbol == "*":
            result, degree = left * right, left_degree + right_degree
        else:
            if right.is_zero:
                raise self.reject("division by zero is not allowed")
            result, degree = left / right, left_degree + right_degree
        return self._checked(result, degree)

    def _power(self, node: ast.BinOp) -> tuple[sympy.Expr, Fraction]:
        exponent = self._exponent(node.right)
        base, base_degree = self.build(node.left)
        if base.is_zero and exponent == 0:
            raise self.reject("0**0 is not allowed")
        if base.is_Rational:
            digits = max(_digits(base.p), _digits(base.q)) * exponent
            if digits > MAX_CONSTANT_DIGITS:
                raise self.reject(f"the constant power has about {int(digits)} digits, more than {MAX_CONSTANT_DIGITS}")
        power = sympy.Rational(exponent.numerator, exponent.denominator)
        return self._checked(base**power, base_degree * exponent)

    def _exponent(self, node: ast.AST) -> Fraction:
        """Read a literal exponent: an int, a float equal to a small fraction, or ``p/q`` of two ints."""
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            numerator = self._integer_literal(node.left)
            denominator = self._integer_literal(node.right)
            if numerator is None or denominator is None or denominator == 0:
                raise self.reject("an exponent must be a number literal or a fraction of two integer literals such as 1/2")
            value = Fraction(numerator, denominator)
        elif isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
            value = Fraction(node.value)
        elif isinstance(node, ast.Constant) and isinstance(node.value, float) and math.isfinite(node.value):
            value = Fraction(node.value).limit_denominator(MAX_EXPONENT_DENOMINATOR)
            if float(value) != node.value:
                raise self.reject(
                    f"the exponent {node.value!r} is not a fraction with denominator at most {MAX_EXPONENT_DENOMINATOR}"
                )
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            raise self.reject("negative exponents are not allowed; write 1/x**n instead of x**-n")
        else:
            raise self.reject("an exponent must be a number literal or a fraction of two integer literals such as 1/2")

        if value < 0:
            raise self.reject(f"the exponent {value} is negative; write 1/x**n instead")
        if value > MAX_EXPONENT:
            raise self.reject(f"the exponent {value} is larger than the limit of {MAX_EXPONENT}")
        if value.denominator > MAX_EXPONENT_DENOMINATOR:
            raise self.reject(f"the exponent {value} has a denominator larger than {MAX_EXPONENT_DENOMINATOR}")
        return value

    @staticmethod
    def _integer_literal(node: ast.AST) -> int | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
            if abs(node.value) <= MAX_LITERAL:
                return node.value
        return None

    def _call(self, node: ast.Call) -> tuple[sympy.Expr, Fraction]:
        if not isinstance(node.func, ast.Name):
            if isinstance(node.func, ast.Attribute):
                raise self.reject("attribute access (x.name) is not allowed")
            raise self.reject("only the listed functions may be called")
        name = node.func.id
        if name.startswith("__"):
            raise self.reject(f"the name {name!r} is not allowed: names starting with '__' are never allowed")
        if name not in ALLOWED_FUNCTIONS:
            raise self.reject(f"the function {name!r} is not allowed")
        if node.keywords or len(node.args) != 1:
            raise self.reject(f"the function {name!r} takes exactly one positional argument")

        argument, _ = self.build(node.args[0])
        return self._checked(ALLOWED_FUNCTIONS[name](argument), Fraction(1))

    def _checked(self, result: sympy.Expr, degree: Fraction) -> tuple[sympy.Expr, Fraction]:
        """Apply the size limits to the result of one operation."""
        if degree > MAX_DEGREE:
            raise self.reject(
                f"the expression has degree {float(degree):g}, more than the limit of {MAX_DEGREE} "
                "(each function call counts as degree 1)"
            )
        for power in result.atoms(sympy.Pow):
            exponent = power.exp
            if exponent.is_Rational and abs(exponent) > MAX_TOTAL_POWER:
                raise self.reject(f"the power {_shorten(str(power), 40)} has an exponent above {MAX_TOTAL_POWER}")
        for number in result.atoms(sympy.Rational):
            if max(_digits(number.p), _digits(number.q)) > MAX_CONSTANT_DIGITS:
                raise self.reject(f"a constant has more than {MAX_CONSTANT_DIGITS} digits")
        return result, degree


def _digits(integer: int) -> int:
    """Return the number of decimal digits of ``|integer|``, estimated from its bit length."""
    return int(abs(integer).bit_length() * math.log10(2)) + 1


class _ActivationPrinter(StrPrinter):
    """SymPy's string printer, with the parser's spelling of ``Max(x, 0)``, ``Abs`` and negative powers."""

    def _print_Max(self, expression: sympy.Max) -> str:
        others = [argument for argument in expression.args if argument != 0]
        if len(expression.args) == 2 and len(others) == 1:
            return f"relu({self._print(others[0])})"
        return super()._print_Max(expression)

    def _print_Abs(self, expression: sympy.Abs) -> str:
        return f"abs({self._print(expression.args[0])})"

    def _print_Pow(self, expression: sympy.Pow, rational: bool = False) -> str:
        exponent = expression.exp
        if exponent.is_Rational and exponent.is_negative and exponent not in (-1, sympy.Rational(-1, 2)):
            return f"1/({self._print(sympy.Pow(expression.base, -exponent, evaluate=False))})"
        return super()._print_Pow(expression, rational)


def format_activation(expression: sympy.Expr) -> str:
    """Print an activation in the syntax of :func:`parse_activation`, for instance ``relu(z) - z**2/2``.

    The text parses back to the same expression unless a constant exceeds a
    parser limit, such as an integer above :data:`MAX_LITERAL` that arose
    from a product of literals.
    """
    return _ActivationPrinter().doprint(expression)
