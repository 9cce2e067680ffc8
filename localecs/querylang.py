"""Parser and evaluator for the Amazon ECS cluster query language.

ECS evaluates these expressions server-side (the ``filter`` of
ListContainerInstances, ``memberOf`` placement constraints); this module lets the
project evaluate them locally, with the grammar of the AWS developer guide page
"Create expressions to define container instances":

    expression := or_expr
    or_expr    := and_expr (("or" | "||") and_expr)*
    and_expr   := not_expr (("and" | "&&") not_expr)*
    not_expr   := ("not" | "!") not_expr | "(" expression ")" | condition
    condition  := subject operator [argument]
    argument   := value | "[" value ("," value)* "]"      (lists for in / !in)
    value      := bare-word | 'single quoted' | "double quoted"

Subjects: ``agentConnected``, ``agentVersion``, ``attribute:NAME``,
``ec2InstanceId``, ``registeredAt``, ``runningTasksCount``, ``task:group``.
Operators (symbol or word form): ``==``/``equals``, ``!=``/``not_equals``,
``>``/``greater_than``, ``>=``/``greater_than_equal``, ``<``/``less_than``,
``<=``/``less_than_equal``, ``exists``, ``!exists``/``not_exists``, ``in``,
``!in``/``not_in``, ``=~``/``matches``, ``!~``/``not_matches``.

Evaluation takes a container instance as DescribeContainerInstances returns it
(``agentConnected``, ``versionInfo.agentVersion``, ``attributes`` as a list of
name/value pairs, ``ec2InstanceId``, ``registeredAt``, ``runningTasksCount``),
plus an optional ``taskGroups`` collection for ``task:group``, which no ECS
response carries per instance.

Choices where the AWS documentation is silent, made so that every negative
operator is exactly the negation of its positive one:
- ``!=``, ``!in`` and ``!~`` are true when the subject is absent (for example
  an instance without the attribute), ``==``, ``in``, ``=~`` and the ordering
  operators are false.
- ``=~`` is a full match of a Python regular expression (the documentation
  names Java's ``Pattern``, whose ``matches`` is also anchored at both ends).
- Ordering on attributes is numeric when both sides are numbers, else textual.
- Keywords (``and``, ``or``, ``not``, word operators) are case-insensitive;
  subjects and values are case-sensitive, except ``true``/``false``.
"""

from __future__ import annotations

import functools
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, ClassVar

__all__ = [
    "And",
    "Condition",
    "Expr",
    "Not",
    "Or",
    "QuerySyntaxError",
    "matches",
    "member_of",
    "parse",
    "satisfies_placement_constraints",
]


class QuerySyntaxError(ValueError):
    """An expression that is not valid cluster query language."""

    def __init__(self, message: str, expression: str, position: int | None = None) -> None:
        self.expression = expression
        self.position = position
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"{message}{where} in {expression!r}")


# Canonical operator names, keyed by every spelling the language accepts.
_OPERATOR_SPELLINGS: dict[str, str] = {
    "==": "==",
    "equals": "==",
    "!=": "!=",
    "not_equals": "!=",
    ">": ">",
    "greater_than": ">",
    ">=": ">=",
    "greater_than_equal": ">=",
    "<": "<",
    "less_than": "<",
    "<=": "<=",
    "less_than_equal": "<=",
    "exists": "exists",
    "!exists": "!exists",
    "not_exists": "!exists",
    "in": "in",
    "!in": "!in",
    "not_in": "!in",
    "=~": "=~",
    "matches": "=~",
    "!~": "!~",
    "not_matches": "!~",
}
# Longest first, so that ">=" is not read as ">" followed by "=".
_SYMBOL_OPERATORS = sorted(
    (spelling for spelling in _OPERATOR_SPELLINGS if not spelling[0].isalpha()),
    key=len,
    reverse=True,
)
_WORD_OPERATORS = sorted(
    (spelling for spelling in _OPERATOR_SPELLINGS if spelling[0].isalpha()),
    key=len,
    reverse=True,
)

_EQUALITY = frozenset({"==", "!=", "in", "!in", "=~", "!~"})
_ORDERING = frozenset({"==", "!=", ">", ">=", "<", "<="})
_ALL_OPERATORS = frozenset(_OPERATOR_SPELLINGS.values())
# The operators the developer guide lists for each subject; attribute:NAME
# takes them all.
_VALID_OPERATORS: dict[str, frozenset[str]] = {
    "agentConnected": _EQUALITY,
    "agentVersion": _ORDERING,
    "ec2InstanceId": _EQUALITY,
    "registeredAt": _ORDERING,
    "runningTasksCount": _ORDERING,
    "task:group": _EQUALITY | {"exists", "!exists"},
}
_NEGATED = {"!=": "==", "!in": "in", "!~": "=~", "!exists": "exists"}

_SUBJECT_RE = re.compile(r"attribute:[^\s=!<>~()\[\],'\"]+|[A-Za-z][A-Za-z0-9_]*(?::[A-Za-z0-9_]+)?")
_WORD_BOUNDARY_RE = re.compile(r"[\s()\[\]]|$")


# ---------------------------------------------------------------------------
# Expression tree


class Expr(ABC):
    """A parsed cluster query expression."""

    @abstractmethod
    def evaluate(self, instance: Mapping[str, Any]) -> bool:
        """Return whether the container instance satisfies the expression."""

    @property
    @abstractmethod
    def subjects(self) -> frozenset[str]:
        """Subjects the expression reads (``attribute:NAME`` kept whole)."""

    def __call__(self, instance: Mapping[str, Any]) -> bool:
        return self.evaluate(instance)


@dataclass(frozen=True)
class Condition(Expr):
    """``subject operator [argument]``: one comparison."""

    subject: str
    operator: str
    values: tuple[str, ...]
    # Values converted once at parse time into what the subject compares with.
    _typed: tuple[Any, ...] = ()

    @property
    def subjects(self) -> frozenset[str]:
        return frozenset({self.subject})

    def evaluate(self, instance: Mapping[str, Any]) -> bool:
        positive = _NEGATED.get(self.operator)
        if positive is not None:
            return not _compare(self.subject, positive, self._typed, instance)
        return _compare(self.subject, self.operator, self._typed, instance)

    def __str__(self) -> str:
        if self.operator in ("exists", "!exists"):
            return f"{self.subject} {self.operator}"
        if self.operator in ("in", "!in"):
            listed = ", ".join(_quote(v) for v in self.values)
            return f"{self.subject} {self.operator} [{listed}]"
        return f"{self.subject} {self.operator} {_quote(self.values[0])}"


@dataclass(frozen=True)
class _Binary(Expr):
    """Two operands joined by ``word``."""

    word: ClassVar[str]
    left: Expr
    right: Expr

    @property
    def subjects(self) -> frozenset[str]:
        return self.left.subjects | self.right.subjects

    def __str__(self) -> str:
        return f"({self.left} {self.word} {self.right})"


@dataclass(frozen=True)
class And(_Binary):
    """Both sides hold."""

    word = "and"

    def evaluate(self, instance: Mapping[str, Any]) -> bool:
        return self.left.evaluate(instance) and self.right.evaluate(instance)


@dataclass(frozen=True)
class Or(_Binary):
    """Either side holds."""

    word = "or"

    def evaluate(self, instance: Mapping[str, Any]) -> bool:
        return self.left.evaluate(instance) or self.right.evaluate(instance)


@dataclass(frozen=True)
class Not(Expr):
    """The operand does not hold."""

    operand: Expr

    @property
    def subjects(self) -> frozenset[str]:
        return self.operand.subjects

    def evaluate(self, instance: Mapping[str, Any]) -> bool:
        return not self.operand.evaluate(instance)

    def __str__(self) -> str:
        return f"not {self.operand}"


def _quote(value: str) -> str:
    if value and re.fullmatch(r"[^\s'\",()\[\]]+", value):
        return value
    return "'" + value + "'" if "'" not in value else '"' + value + '"'


# ---------------------------------------------------------------------------
# Parsing


class _Parser:
    """Recursive descent over the raw text.

    Scanning depends on the position in the grammar (a ``!`` is ``not`` before
    a subject but part of an operator after one, a ``[`` opens a list only
    where an argument starts), so there is no separate tokenizer.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, message: str, position: int | None = None) -> QuerySyntaxError:
        return QuerySyntaxError(message, self.text, self.pos if position is None else position)

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def at_end(self) -> bool:
        self.skip_space()
        return self.pos >= len(self.text)

    def accept(self, *spellings: str) -> bool:
        """Consume one of the spellings if it comes next; words need a boundary."""
        self.skip_space()
        for spelling in spellings:
            end = self.pos + len(spelling)
            if self.text[self.pos : end].lower() != spelling:
                continue
            if spelling[-1].isalpha() and not _WORD_BOUNDARY_RE.match(self.text, end):
                continue
            self.pos = end
            return True
        return False

    def parse(self) -> Expr:
        if self.at_end():
            raise self.error("empty expression", 0)
        expr = self.parse_or()
        if not self.at_end():
            raise self.error(f"unexpected {self.text[self.pos :]!r}")
        return expr

    def parse_or(self) -> Expr:
        expr = self.parse_and()
        while self.accept("or", "||"):
            expr = Or(expr, self.parse_and())
        return expr

    def parse_and(self) -> Expr:
        expr = self.parse_not()
        while self.accept("and", "&&"):
            expr = And(expr, self.parse_not())
        return expr

    def parse_not(self) -> Expr:
        # "!=" can never start a term, but check so "!" is not taken from "!exists".
        if self.accept("not"):
            return Not(self.parse_not())
        self.skip_space()
        if self.text.startswith("!", self.pos) and not self.text.startswith(("!=", "!~"), self.pos):
            self.pos += 1
            return Not(self.parse_not())
        if self.accept("("):
            expr = self.parse_or()
            if not self.accept(")"):
                raise self.error("expected ')'")
            return expr
        return self.parse_condition()

    def parse_condition(self) -> Condition:
        self.skip_space()
        start = self.pos
        if self.pos >= len(self.text):
            raise self.error("expected a subject, found the end of the expression")
        match = _SUBJECT_RE.match(self.text, self.pos)
        if match is None:
            raise self.error(f"expected a subject, found {self.text[self.pos :]!r}")
        subject = match.group(0)
        if subject.lower() in ("and", "or", "not"):
            raise self.error(f"expected a subject, found the keyword {subject!r}", start)
        if subject in ("attribute", "task"):
            raise self.error(f"expected {subject}:NAME, found {subject!r} alone", start)
        if not subject.startswith("attribute:") and subject not in _VALID_OPERATORS:
            raise self.error(f"unknown subject {subject!r}", start)
        self.pos = match.end()

        operator = self.parse_operator(subject)
        valid = _VALID_OPERATORS.get(subject, _ALL_OPERATORS)
        if operator not in valid:
            raise self.error(f"operator {operator!r} is not valid for {subject}", start)

        values: tuple[str, ...]
        if operator in ("exists", "!exists"):
            values = ()
        elif operator in ("in", "!in"):
            values = self.parse_list()
        else:
            values = (self.parse_value(in_list=False),)
        typed = tuple(_convert(subject, operator, value, self, start) for value in values)
        return Condition(subject, operator, values, typed)

    def parse_operator(self, subject: str) -> str:
        self.skip_space()
        for spelling in _SYMBOL_OPERATORS:
            if not self.text.startswith(spelling, self.pos):
                continue
            end = self.pos + len(spelling)
            # "!in" and "!exists" end in letters and need a word boundary.
            if spelling[-1].isalpha() and not _WORD_BOUNDARY_RE.match(self.text, end):
                continue
            self.pos = end
            return _OPERATOR_SPELLINGS[spelling]
        for spelling in _WORD_OPERATORS:
            if self.accept(spelling):
                return _OPERATOR_SPELLINGS[spelling]
        found = self.text[self.pos :] or "the end of the expression"
        raise self.error(f"expected an operator after {subject}, found {found!r}")

    def parse_list(self) -> tuple[str, ...]:
        if not self.accept("["):
            raise self.error("expected an argument list like [value1, value2]")
        values = [self.parse_value(in_list=True)]
        while self.accept(","):
            values.append(self.parse_value(in_list=True))
        if not self.accept("]"):
            raise self.error("expected ',' or ']' in the argument list")
        return tuple(values)

    def parse_value(self, *, in_list: bool) -> str:
        self.skip_space()
        start = self.pos
        if self.pos >= len(self.text):
            raise self.error("expected a value, found the end of the expression")
        quote = self.text[self.pos]
        if quote in "'\"":
            end = self.text.find(quote, self.pos + 1)
            if end < 0:
                raise self.error("unterminated quoted value")
            self.pos = end + 1
            return self.text[start + 1 : end]
        # A bare word runs to white space or to what closes its context; a
        # value containing those characters (a regex group, say) must be quoted.
        stops = " \t\r\n,]" if in_list else " \t\r\n)"
        while self.pos < len(self.text) and self.text[self.pos] not in stops:
            self.pos += 1
        value = self.text[start : self.pos]
        if not value or value[0] in "[(),]":
            raise self.error("expected a value")
        return value


def _convert(subject: str, operator: str, value: str, parser: _Parser, position: int) -> Any:
    """Turn an argument into the type the subject compares with, or raise."""
    if operator in ("=~", "!~"):
        try:
            return re.compile(value)
        except re.error as exc:
            raise parser.error(f"invalid pattern {value!r}: {exc}", position) from None
    if subject == "agentConnected":
        if value.lower() not in ("true", "false"):
            raise parser.error(f"agentConnected compares with true or false, not {value!r}", position)
        return value.lower() == "true"
    if subject == "runningTasksCount":
        if not re.fullmatch(r"[+-]?\d+", value):
            raise parser.error(f"runningTasksCount compares with an integer, not {value!r}", position)
        return int(value)
    if subject == "agentVersion":
        version = _version(value)
        if version is None:
            raise parser.error(f"agentVersion compares with a version like 1.14.5, not {value!r}", position)
        return version
    if subject == "registeredAt":
        moment = _timestamp(value)
        if moment is None:
            raise parser.error(
                f"registeredAt compares with a date like 2018-06-18 or 2018-06-18T22:28:28Z, not {value!r}",
                position,
            )
        return moment
    return value


@functools.lru_cache(maxsize=256)
def parse(expression: str) -> Expr:
    """Parse a cluster query expression; raise QuerySyntaxError if it is not one."""
    if not isinstance(expression, str):
        raise QuerySyntaxError("expression must be a string", repr(expression))
    return _Parser(expression).parse()


# ---------------------------------------------------------------------------
# Evaluation


def _version(text: Any) -> tuple[int, ...] | None:
    match = re.fullmatch(r"v?(\d+(?:\.\d+)*)", str(text).strip())
    if match is None:
        return None
    return tuple(int(part) for part in match.group(1).split("."))


def _timestamp(value: Any) -> datetime | None:
    """Read a registration time: datetime, epoch seconds (moto's JSON) or ISO text."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?)?", text):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _attributes(instance: Mapping[str, Any]) -> Mapping[str, Any]:
    attributes = instance.get("attributes") or {}
    if isinstance(attributes, Mapping):
        return attributes
    # DescribeContainerInstances shape: [{"name": ..., "value": ...}]; an
    # attribute without a value (ECS has those, e.g. capability flags) exists.
    return {item["name"]: item.get("value") for item in attributes}


_MISSING = object()


def _subject_values(subject: str, instance: Mapping[str, Any]) -> list[Any]:
    """The instance's values for the subject: empty when absent, several for task:group."""
    if subject.startswith("attribute:"):
        value = _attributes(instance).get(subject[len("attribute:") :], _MISSING)
        if value is _MISSING:
            return []
        return ["" if value is None else str(value)]
    if subject == "task:group":
        return [str(group) for group in instance.get("taskGroups") or ()]
    if subject == "agentVersion":
        version_info = instance.get("versionInfo") or {}
        value = instance.get("agentVersion", version_info.get("agentVersion"))
    else:
        value = instance.get(subject)
    return [] if value is None else [value]


def _ordered(operator: str, left: Any, right: Any) -> bool:
    comparisons: dict[str, Callable[[Any, Any], bool]] = {
        "==": lambda a, b: a == b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
    }
    return comparisons[operator](left, right)


def _compare_one(subject: str, operator: str, arguments: tuple[Any, ...], actual: Any) -> bool:
    if operator == "=~":
        pattern = arguments[0]
        text = str(actual).lower() if isinstance(actual, bool) else str(actual)
        return pattern.fullmatch(text) is not None
    if operator == "in":
        return any(_compare_one(subject, "==", (argument,), actual) for argument in arguments)
    argument = arguments[0]
    if subject == "agentConnected":
        return bool(actual) == argument
    if subject == "runningTasksCount":
        return _ordered(operator, int(actual), argument)
    if subject == "agentVersion":
        version = _version(actual)
        return version is not None and _ordered(operator, version, argument)
    if subject == "registeredAt":
        moment = _timestamp(actual)
        return moment is not None and _ordered(operator, moment, argument)
    if operator == "==":
        return str(actual) == argument
    left, right = _number(str(actual)), _number(argument)
    if left is not None and right is not None:
        return _ordered(operator, left, right)
    return _ordered(operator, str(actual), argument)


def _compare(subject: str, operator: str, arguments: tuple[Any, ...], instance: Mapping[str, Any]) -> bool:
    values = _subject_values(subject, instance)
    if operator == "exists":
        return bool(values)
    # task:group holds when any task on the instance is in the group.
    return any(_compare_one(subject, operator, arguments, value) for value in values)


def matches(expression: str, instance: Mapping[str, Any]) -> bool:
    """Return whether the container instance satisfies the expression."""
    return parse(expression).evaluate(instance)


def member_of(expression: str, instance: Mapping[str, Any]) -> bool:
    """Evaluate a ``memberOf`` placement constraint expression for one instance.

    The same language as a ListContainerInstances filter, so the same evaluator;
    a separate name keeps call sites honest about which ECS feature they mirror.
    """
    return matches(expression, instance)


def satisfies_placement_constraints(
    instance: Mapping[str, Any], constraints: Iterable[Mapping[str, Any]] | None
) -> bool:
    """Return whether the instance satisfies every ``memberOf`` constraint.

    ``distinctInstance`` limits tasks per host, not which hosts qualify, so it
    never excludes an instance here.
    """
    for constraint in constraints or ():
        if constraint.get("type") == "memberOf" and not member_of(constraint.get("expression", ""), instance):
            return False
    return True
