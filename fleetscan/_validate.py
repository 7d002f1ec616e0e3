"""Shape checks compiled once from the shipped JSON Schemas: what every reader runs on what it
reads back (records, manifests), so that a tampered or wrong-typed file fails with one line naming
the field, never a ``TypeError`` deep inside the audit.

A general JSON Schema validator costs tens of microseconds per record and is not a runtime
dependency; these checks sit on per-record hot paths, so each schema is compiled once into nested
closures covering exactly the keywords the shipped schemas use (``type``, ``const``, ``enum``,
``pattern``, ``minLength``, ``maxLength``, ``minimum``, ``properties``, ``required``,
``additionalProperties: false``, ``items``, ``allOf`` of ``if``/``then``). A schema with any other
keyword fails to compile, so a schema change can never silently drop a check. ``format`` is an
annotation, as JSON Schema 2020-12 has it by default: the ``pattern`` beside each ``date-time``
fixes its shape. One deliberate difference from the letter of the spec: a pattern's final ``$``
matches only at the very end (Python's ``$`` also matches before a trailing newline).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from ._records import load_schema

#: A compiled check: returns when the value fits, raises :class:`Mismatch` otherwise.
Check = Callable[[Any], None]

_ANNOTATIONS: Final = frozenset({"$schema", "$id", "title", "description", "examples", "format"})
_KEYWORDS: Final = _ANNOTATIONS | {
    "type",
    "const",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "allOf",
    "if",
    "then",
}
_PYTHON_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "null": (type(None),),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "string": (str,),
    "array": (list,),
    "object": (dict,),
}
_JSON_NAMES: Final = {
    type(None): "null",
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


_NAME: Final = re.compile(r"[A-Za-z0-9_]{1,64}")


class Mismatch(Exception):
    """A value that does not fit its schema; ``path`` names where, from the top."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: list[str | int] = []

    def __str__(self) -> str:
        where = ""
        for part in self.path:
            if isinstance(part, int):
                where += f"[{part}]"
            elif _NAME.fullmatch(part):
                where += f".{part}" if where else part
            else:  # a key someone planted: quoted, so it cannot break the line or mislead
                where += f"[{_shown(part)}]"
        return f"{where}: {self.problem}" if where else self.problem


def _anchored(pattern: str) -> Callable[[str], object]:
    """``pattern`` searched as JSON Schema does, a final ``$`` meaning the very end."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern).search


def compile_schema(schema: Mapping[str, Any]) -> Check:
    """One check for ``schema``; ValueError for a keyword this module does not implement."""
    unknown = schema.keys() - _KEYWORDS
    if unknown:
        raise ValueError(f"schema keyword(s) not implemented: {', '.join(sorted(unknown))}")
    checks: list[Check] = []
    if "type" in schema:
        checks.append(_type_check(schema["type"]))
    if "const" in schema:
        checks.append(_const_check(schema["const"]))
    if "enum" in schema:
        checks.append(_enum_check(schema["enum"]))
    if "pattern" in schema:
        checks.append(_pattern_check(schema["pattern"]))
    if "minLength" in schema or "maxLength" in schema:
        checks.append(_length_check(schema.get("minLength", 0), schema.get("maxLength")))
    if "minimum" in schema:
        checks.append(_minimum_check(schema["minimum"]))
    if schema.keys() & {"properties", "required", "additionalProperties"}:
        checks.append(_object_check(schema))
    if "items" in schema:
        checks.append(_items_check(compile_schema(schema["items"])))
    for part in schema.get("allOf", ()):
        checks.append(compile_schema(part))
    if "if" in schema:
        checks.append(_conditional(compile_schema(schema["if"]), compile_schema(schema["then"])))
    if len(checks) == 1:
        return checks[0]

    def check_all(value: Any) -> None:
        for check in checks:
            check(value)

    return check_all


def _type_check(declared: str | list[str]) -> Check:
    names = [declared] if isinstance(declared, str) else list(declared)
    allowed = frozenset(t for name in names for t in _PYTHON_TYPES[name])
    # A JSON integer may be spelled 1.0 (a float once parsed): the spec counts it an integer.
    float_integers = "integer" in names and "number" not in names
    expected = " or ".join(names)

    def check_type(value: Any) -> None:
        kind = type(value)
        if kind in allowed or (float_integers and kind is float and value.is_integer()):
            return
        raise Mismatch(f"expected {expected}, got {_JSON_NAMES.get(kind, kind.__name__)}")

    return check_type


def _same(a: object, b: object) -> bool:
    """JSON equality: numbers by value, but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _const_check(const: Any) -> Check:
    def check_const(value: Any) -> None:
        if not _same(value, const):
            raise Mismatch(f"must be {const!r}")

    return check_const


def _enum_check(choices: list[Any]) -> Check:
    shown = ", ".join(map(str, choices))

    def check_enum(value: Any) -> None:
        if not any(_same(value, choice) for choice in choices):
            raise Mismatch(f"must be one of {shown}")

    return check_enum


def _pattern_check(pattern: str) -> Check:
    search = _anchored(pattern)

    def check_pattern(value: Any) -> None:
        if type(value) is str and search(value) is None:
            raise Mismatch(f"{_shown(value)} does not match {pattern}")

    return check_pattern


def _shown(text: str) -> str:
    """A value quoted in a message, cut short: a hostile file must not flood the terminal."""
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _length_check(shortest: int, longest: int | None) -> Check:
    def check_length(value: Any) -> None:
        if type(value) is not str:
            return
        if len(value) < shortest:
            raise Mismatch(f"shorter than {shortest} characters")
        if longest is not None and len(value) > longest:
            raise Mismatch(f"longer than {longest} characters")

    return check_length


def _minimum_check(least: float) -> Check:
    def check_minimum(value: Any) -> None:
        if type(value) in (int, float) and value < least:
            raise Mismatch(f"must be at least {least}")

    return check_minimum


def _object_check(schema: Mapping[str, Any]) -> Check:
    extra = schema.get("additionalProperties", True)
    if extra not in (True, False):
        raise ValueError("schema keyword not implemented: additionalProperties as a schema")
    properties = {name: compile_schema(sub) for name, sub in schema.get("properties", {}).items()}
    required = tuple(schema.get("required", ()))
    known = frozenset(properties)
    closed = extra is False

    def check_object(value: Any) -> None:
        if type(value) is not dict:
            return
        for name in required:
            if name not in value:
                raise _at(Mismatch("missing"), name)
        if closed and not known.issuperset(value):
            raise _at(Mismatch("not a field of this schema"), min(set(value) - known))
        for name, element in value.items():
            check = properties.get(name)
            if check is not None:
                try:
                    check(element)
                except Mismatch as exc:
                    raise _at(exc, name) from None

    return check_object


def _items_check(item: Check) -> Check:
    def check_items(value: Any) -> None:
        if type(value) is not list:
            return
        for index, element in enumerate(value):
            try:
                item(element)
            except Mismatch as exc:
                raise _at(exc, index) from None

    return check_items


def _conditional(condition: Check, then: Check) -> Check:
    def check_conditional(value: Any) -> None:
        try:
            condition(value)
        except Mismatch:
            return
        then(value)

    return check_conditional


def _at(exc: Mismatch, part: str | int) -> Mismatch:
    exc.path.insert(0, part)
    return exc


class _Matches:
    """A pattern's search, remembering strings that matched: records repeat the same run id,
    account, region and gateway on every line, and a set lookup is ten times cheaper than the
    regular expression. Bounded: the memory is forgotten when full."""

    LIMIT: Final = 4096

    def __init__(self, pattern: str) -> None:
        self._search = _anchored(pattern)
        self._seen: set[str] = set()

    def __call__(self, text: str) -> bool:
        if text in self._seen:
            return True
        if self._search(text) is None:
            return False
        if len(self._seen) >= self.LIMIT:
            self._seen.clear()
        self._seen.add(text)
        return True


# -- the fast path: one generated predicate per schema ---------------------------------------


class _Source:
    """Python source of a predicate equivalent to :func:`compile_schema`'s check (true: the
    value fits), generated once: a few microseconds per record instead of a dozen closures'."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {}
        self.count = 0

    def constant(self, value: Any) -> str:
        name = f"_c{len(self.names)}"
        self.names[name] = value
        return name

    def function(self, schema: Mapping[str, Any]) -> str:
        """The name of a generated function testing ``schema``."""
        self.count += 1
        name = f"_f{self.count}"
        body = [f"def {name}(v):"]
        for condition in self.conditions(schema, "v"):
            body.append(f"    if not ({condition}): return False")
        body.append("    return True")
        self.lines.extend(body)
        return name

    def conditions(self, schema: Mapping[str, Any], v: str) -> list[str]:
        """Expressions over the variable ``v``, all true when the value fits."""
        found: list[str] = []
        if "type" in schema:
            names = [schema["type"]] if isinstance(schema["type"], str) else schema["type"]
            kinds = [t for name in names for t in _PYTHON_TYPES[name]]
            tests = [f"type({v}) is {self.constant(kind)}" for kind in dict.fromkeys(kinds)]
            if "integer" in names and "number" not in names:
                tests.append(f"(type({v}) is float and {v}.is_integer())")
            found.append(" or ".join(tests))
        for keyword in ("const", "enum"):
            if keyword in schema:
                choices = [schema[keyword]] if keyword == "const" else schema[keyword]
                found.append(self.choice(choices, v))
        if "pattern" in schema:
            matches = self.constant(_Matches(schema["pattern"]))
            found.append(f"type({v}) is not str or {matches}({v})")
        if "minLength" in schema:
            found.append(f"type({v}) is not str or len({v}) >= {int(schema['minLength'])}")
        if "maxLength" in schema:
            found.append(f"type({v}) is not str or len({v}) <= {int(schema['maxLength'])}")
        if "minimum" in schema:
            least = self.constant(schema["minimum"])
            found.append(f"type({v}) not in (int, float) or {v} >= {least}")
        if schema.keys() & {"properties", "required", "additionalProperties"}:
            found.append(f"{self.object_function(schema)}({v})")
        if "items" in schema:
            item = self.function(schema["items"])
            found.append(f"type({v}) is not list or all(map({item}, {v}))")
        for part in schema.get("allOf", ()):
            found.append(f"{self.function(part)}({v})")
        if "if" in schema:
            condition, then = self.function(schema["if"]), self.function(schema["then"])
            found.append(f"not {condition}({v}) or {then}({v})")
        return found

    def choice(self, choices: list[Any], v: str) -> str:
        """``v`` is one of ``choices`` (JSON equality: true is not 1)."""
        if all(type(c) is str for c in choices):
            return f"type({v}) is str and {v} in {self.constant(frozenset(choices))}"
        if all(type(c) is int for c in choices):
            allowed = self.constant(frozenset(choices))
            return f"type({v}) in (int, float) and {v} in {allowed}"
        fits = self.constant(lambda value: any(_same(value, c) for c in choices))
        return f"{fits}({v})"

    def object_function(self, schema: Mapping[str, Any]) -> str:
        properties: Mapping[str, Any] = schema.get("properties", {})
        required = self.constant(frozenset(schema.get("required", ())))
        known = self.constant(frozenset(properties))
        self.count += 1
        name = f"_f{self.count}"
        body = [f"def {name}(v):", "    if type(v) is not dict: return True"]
        body.append(f"    if not v.keys() >= {required}: return False")
        if schema.get("additionalProperties", True) is False:
            body.append(f"    if not v.keys() <= {known}: return False")
        missing = self.constant(object())
        for key, sub in properties.items():
            conditions = self.conditions(sub, "x")
            if not conditions:
                continue
            body.append(f"    x = v.get({key!r}, {missing})")
            joined = " and ".join(f"({c})" for c in conditions)
            body.append(f"    if x is not {missing} and not ({joined}): return False")
        body.append("    return True")
        self.lines.extend(body)
        return name


def compile_predicate(schema: Mapping[str, Any]) -> Callable[[Any], bool]:
    """A fast yes/no for ``schema``, the same answer as :func:`compile_schema`'s check."""
    compile_schema(schema)  # refuses the keywords neither implements
    source = _Source()
    top = source.function(schema)
    namespace: dict[str, Any] = dict(source.names)
    exec(compile("\n".join(source.lines), f"<schema {schema.get('$id', '')}>", "exec"), namespace)
    predicate: Callable[[Any], bool] = namespace[top]
    return predicate


@functools.cache
def checker(name: str) -> Check:
    """The check of a shipped schema (a dataset's name, or ``manifest``): the generated
    predicate, and the closures only to say what is wrong once it answers no."""
    schema = load_schema(name)
    fits, explain = compile_predicate(schema), compile_schema(schema)

    def check(value: Any) -> None:
        if not fits(value):
            explain(value)
            raise Mismatch("does not fit the schema")  # unreachable while both agree

    return check
