"""The part of CEL (Common Expression Language) that Inngest function configs use, for the executor.

Inngest evaluates CEL expressions against ``{"event": <the event>}`` for trigger conditions
(``if``), idempotency, rate-limit, throttle and concurrency keys and run priority
(``pkg/expressions``). The stand-in needs only what this project's functions and the SDK write:

* paths: ``event.data.isrc``, ``event.data["isrc"]``, ``event.id``, ``event.name``;
* literals: strings in single or double quotes, integers, floats, ``true``, ``false``, ``null``;
* ``+`` (string concatenation, or numeric addition), ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``,
  ``&&``, ``||``, ``!``, unary ``-``, the ternary ``c ? a : b``, parentheses, and ``has(path)``.

Anything else (other functions, macros, lists, maps, ``in``, arithmetic beyond ``+``) is refused
when the expression is compiled, i.e. when the function is registered, with an
:class:`ExpressionError` naming the expression and the unsupported part: the stand-in never guesses
what an expression means.

Semantics, as Inngest's evaluator behaves for the cases used here: a path through a missing key is
``null`` (Inngest treats an absent attribute as unknown/null rather than failing the event);
``has()`` is true when the last key exists (even with a null value); ``+`` of a string with a
non-string, and ordering comparisons between different types, are evaluation errors (CEL has no
implicit conversions), raised as :class:`ExpressionError` at evaluation time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Expression", "ExpressionError", "compile_expression"]

_MISSING = object()


class ExpressionError(ValueError):
    """An expression the stand-in cannot compile or could not evaluate; says which and why."""


Evaluator = Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled expression; ``evaluate({"event": {...}})`` returns its value."""

    source: str
    _fn: Evaluator

    def evaluate(self, variables: Mapping[str, Any]) -> Any:
        """The value of the expression for these variables (``event``)."""
        return self._fn(variables)

    def matches(self, variables: Mapping[str, Any]) -> bool:
        """For conditions: true only when the value is exactly ``true``."""
        return self._fn(variables) is True


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<num>\d+\.\d+|\d+)
      | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op>==|!=|<=|>=|&&|\|\||[-+*/%<>!?:.()\[\],{}])
    )""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}
_ROOTS = frozenset({"event"})


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), body)


def _tokenize(source: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    stripped = source.rstrip()
    while pos < len(stripped):
        match = _TOKEN.match(stripped, pos)
        if match is None or match.end() == pos:
            raise ExpressionError(
                f"cannot evaluate expression {source!r}: unexpected character at {pos}"
            )
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    tokens.append(("end", ""))
    return tokens


class _Parser:
    """A recursive-descent parser for the subset, in CEL's precedence order."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = _tokenize(source)
        self.pos = 0

    def fail(self, why: str) -> ExpressionError:
        return ExpressionError(f"cannot evaluate expression {self.source!r}: {why}")

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos]

    def take(self) -> tuple[str, str]:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def accept(self, op: str) -> bool:
        if self.peek() == ("op", op):
            self.pos += 1
            return True
        return False

    def expect(self, op: str) -> None:
        if not self.accept(op):
            raise self.fail(f"expected {op!r}, found {self.peek()[1] or 'the end'!r}")

    def parse(self) -> Evaluator:
        fn = self.ternary()
        if self.peek()[0] != "end":
            raise self.fail(f"unsupported syntax at {self.peek()[1]!r}")
        return fn

    def ternary(self) -> Evaluator:
        cond = self.logical_or()
        if not self.accept("?"):
            return cond
        then = self.logical_or()
        self.expect(":")
        other = self.ternary()
        source = self.source

        def pick(v: Mapping[str, Any]) -> Any:
            c = cond(v)
            if not isinstance(c, bool):
                raise ExpressionError(f"{source!r}: a ternary's condition must be a bool")
            return then(v) if c else other(v)

        return pick

    def logical_or(self) -> Evaluator:
        left = self.logical_and()
        while self.accept("||"):
            right = self.logical_and()
            left = _logical(left, right, is_or=True, source=self.source)
        return left

    def logical_and(self) -> Evaluator:
        left = self.relation()
        while self.accept("&&"):
            right = self.relation()
            left = _logical(left, right, is_or=False, source=self.source)
        return left

    def relation(self) -> Evaluator:
        left = self.additive()
        kind, op = self.peek()
        if kind == "op" and op in ("==", "!=", "<", "<=", ">", ">="):
            self.take()
            right = self.additive()
            return _compare(op, left, right, self.source)
        if kind == "name" and op == "in":
            raise self.fail("the 'in' operator is not supported by the stand-in")
        return left

    def additive(self) -> Evaluator:
        left = self.unary()
        while True:
            kind, op = self.peek()
            if kind == "op" and op == "+":
                self.take()
                left = _plus(left, self.unary(), self.source)
            elif kind == "op" and op in ("-", "*", "/", "%"):
                raise self.fail(f"the {op!r} operator is not supported by the stand-in")
            else:
                return left

    def unary(self) -> Evaluator:
        if self.accept("!"):
            inner = self.unary()
            source = self.source

            def negate(v: Mapping[str, Any]) -> Any:
                value = inner(v)
                if not isinstance(value, bool):
                    raise ExpressionError(f"{source!r}: '!' needs a bool")
                return not value

            return negate
        if self.accept("-"):
            inner = self.unary()
            source = self.source

            def minus(v: Mapping[str, Any]) -> Any:
                value = inner(v)
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ExpressionError(f"{source!r}: unary '-' needs a number")
                return -value

            return minus
        return self.primary()

    def primary(self) -> Evaluator:
        kind, text = self.take()
        if kind == "num":
            number: Any = float(text) if "." in text else int(text)
            return lambda v: number
        if kind == "str":
            string = _unquote(text)
            return lambda v: string
        if kind == "op" and text == "(":
            inner = self.ternary()
            self.expect(")")
            return inner
        if kind == "name":
            if text in ("true", "false", "null"):
                constant = {"true": True, "false": False, "null": None}[text]
                return lambda v: constant
            if self.peek() == ("op", "("):
                return self.call(text)
            path = self.path(text)
            return lambda v: _walk(v, path)[0]
        raise self.fail(f"unsupported syntax at {text or 'the end'!r}")

    def call(self, name: str) -> Evaluator:
        if name != "has":
            raise self.fail(f"the function {name}() is not supported by the stand-in")
        self.expect("(")
        kind, root = self.take()
        if kind != "name":
            raise self.fail("has() takes a field path such as event.data.force")
        path = self.path(root)
        self.expect(")")
        if len(path) < 2:
            raise self.fail("has() needs a field selection such as event.data.force")

        def has(v: Mapping[str, Any]) -> Any:
            return _walk(v, path)[1]

        return has

    def path(self, root: str) -> tuple[str, ...]:
        if root not in _ROOTS:
            raise self.fail(f"unknown variable {root!r} (only 'event' is available)")
        parts = [root]
        while True:
            if self.accept("."):
                kind, text = self.take()
                if kind != "name":
                    raise self.fail(f"expected a field name after '.', found {text!r}")
                if self.peek() == ("op", "("):
                    raise self.fail(f"method calls such as .{text}() are not supported")
                parts.append(text)
            elif self.accept("["):
                kind, text = self.take()
                if kind != "str":
                    raise self.fail("only string keys are supported in [...]")
                self.expect("]")
                parts.append(_unquote(text))
            else:
                return tuple(parts)


def _walk(variables: Mapping[str, Any], path: tuple[str, ...]) -> tuple[Any, bool]:
    """(value, whether the last key exists); a missing key anywhere gives (None, False)."""
    value: Any = variables
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None, False
        value = value[key]
    return value, True


def _logical(left: Evaluator, right: Evaluator, *, is_or: bool, source: str) -> Evaluator:
    def combine(v: Mapping[str, Any]) -> Any:
        a = left(v)
        if not isinstance(a, bool):
            raise ExpressionError(f"{source!r}: '&&' and '||' need bools")
        if a is is_or:  # short-circuit: true || ..., false && ...
            return a
        b = right(v)
        if not isinstance(b, bool):
            raise ExpressionError(f"{source!r}: '&&' and '||' need bools")
        return b

    return combine


def _same_kind(a: Any, b: Any) -> bool:
    def kind(x: Any) -> str:
        if isinstance(x, bool):
            return "bool"
        if isinstance(x, int | float):
            return "number"
        return type(x).__name__

    return kind(a) == kind(b)


def _compare(op: str, left: Evaluator, right: Evaluator, source: str) -> Evaluator:
    def equal(v: Mapping[str, Any]) -> Any:
        a, b = left(v), right(v)
        # CEL: values of different types are never equal (true is not 1).
        return _same_kind(a, b) and a == b

    if op == "==":
        return equal
    if op == "!=":
        return lambda v: not equal(v)

    def order(v: Mapping[str, Any]) -> Any:
        a, b = left(v), right(v)
        if a is None or b is None or not _same_kind(a, b) or isinstance(a, bool | dict | list):
            raise ExpressionError(f"{source!r}: cannot compare {a!r} {op} {b!r}")
        if op == "<":
            return a < b
        if op == "<=":
            return a <= b
        if op == ">":
            return a > b
        return a >= b

    return order


def _plus(left: Evaluator, right: Evaluator, source: str) -> Evaluator:
    def add(v: Mapping[str, Any]) -> Any:
        a, b = left(v), right(v)
        if isinstance(a, str) and isinstance(b, str):
            return a + b
        numbers = (int, float)
        if (
            isinstance(a, numbers)
            and isinstance(b, numbers)
            and not isinstance(a, bool)
            and not isinstance(b, bool)
        ):
            return a + b
        raise ExpressionError(f"{source!r}: '+' needs two strings or two numbers, not {a!r}, {b!r}")

    return add


def compile_expression(source: str) -> Expression:
    """Compile ``source``; raises :class:`ExpressionError` for anything outside the subset."""
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError(f"cannot evaluate expression {source!r}: it is empty")
    return Expression(source, _Parser(source).parse())
