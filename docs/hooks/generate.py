"""MkDocs hook: the parts of the docs that restate the code are rendered from the code.

A page asks for a generated part with an HTML comment on a line of its own::

    <!-- fleetscan:help scan -->               `fleetscan scan --help`, from build_parser()
    <!-- fleetscan:config-table -->            every ScanConfig key: flag, TOML key, default
    <!-- fleetscan:schema recovery_points -->  a dataset's fields, from the shipped JSON Schema
    <!-- fleetscan:api -->                     signature and docstring of every public name

Why generate: a flag's default, a field's type or a function's signature written twice (once in
the code, once by hand in a page) drifts as soon as one of them changes; rendered at build time,
the page says what the installed code does. An unknown marker fails the build.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.resources
import inspect
import json
import os
import re
from collections.abc import Iterator
from typing import Any

from mkdocs.exceptions import PluginError

import fleetscan
from fleetscan._commands import build_parser
from fleetscan._config import CONFIG_KEYS, ScanConfig
from fleetscan._records import DATASETS

MARKER = re.compile(r"^<!-- fleetscan:(?P<kind>[a-z-]+)(?: +(?P<arg>[^>]*?))? *-->$", re.MULTILINE)
#: Help is rendered at this width, whatever the terminal that builds the site.
HELP_COLUMNS = 90


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs' hook: replace every marker of a page with what it stands for."""
    return MARKER.sub(lambda match: render(match["kind"], (match["arg"] or "").strip()), markdown)


def render(kind: str, arg: str) -> str:
    if kind == "help":
        return help_text(arg)
    if kind == "commands":
        return commands_table()
    if kind == "help-all":
        return all_help()
    if kind == "config-table":
        return config_table()
    if kind == "schema":
        return schema_table(arg)
    if kind == "api":
        return api_reference()
    raise PluginError(f"unknown docs marker fleetscan:{kind}")


# -- the CLI ---------------------------------------------------------------------------------


def full_parser() -> argparse.ArgumentParser:
    """The command line with the emulator's real flags (the main parser only lists it)."""
    from fleetscan.emulator._cli import add_emulator_parser

    return build_parser(add_emulator_parser)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def find_command(path: str) -> argparse.ArgumentParser:
    """``""`` is ``fleetscan`` itself, ``"emulator serve"`` a nested command."""
    parser = full_parser()
    for name in path.split():
        choices = subcommands(parser)
        if name not in choices:
            raise PluginError(f"fleetscan has no command {path!r}")
        parser = choices[name]
    return parser


@contextlib.contextmanager
def _columns(width: int) -> Iterator[None]:
    """argparse wraps help to $COLUMNS: fix it so the page does not depend on who builds it."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def help_text(path: str) -> str:
    with _columns(HELP_COLUMNS):
        text = find_command(path).format_help()
    return f"```text\n{text.rstrip()}\n```"


def leaf_commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every command that runs something, as (path, one-line help): ("scan",), ("emulator",
    "serve"), ... in the order ``--help`` lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                if subcommands(sub):
                    yield from leaf_commands(sub, (*path, name))
                else:
                    yield (*path, name), helps.get(name, "")


def commands_table() -> str:
    rows = [
        f"| [`fleetscan {' '.join(p)}`](#fleetscan-{'-'.join(p)}) | {_cell(h)} |"
        for p, h in leaf_commands(full_parser())
    ]
    return "| command | what it does |\n|---|---|\n" + "\n".join(rows)


def all_help() -> str:
    """``fleetscan --help``, then each command's, each under a heading of its own."""
    sections = [f"## `fleetscan`\n\n{help_text('')}"]
    for path, _ in leaf_commands(full_parser()):
        name = " ".join(path)
        sections.append(f"## `fleetscan {name}`\n\n{help_text(name)}")
    return "\n\n".join(sections)


# -- the configuration -----------------------------------------------------------------------


def field_comments(cls: type) -> dict[str, str]:
    """The ``#:`` comment above each field of a dataclass, from its source (as Sphinx reads it)."""
    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        match = re.match(r"(?P<name>[a-z_][a-z0-9_]*)\s*:", stripped)
        if match and pending:
            comments[match["name"]] = " ".join(pending)
        pending = []
    return comments


def field_default(cls: type, name: str) -> Any:
    for field in dataclasses.fields(cls):
        if field.name == name:
            if field.default is not dataclasses.MISSING:
                return field.default
            if field.default_factory is not dataclasses.MISSING:
                return field.default_factory()
    raise KeyError(name)


def toml_value(name: str, value: Any) -> str:
    """A default as it would be written in the TOML file; an unset value as a dash."""
    if value is None:
        return "(not set)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if name == "file_mode":
        return f"`0o{value:o}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, tuple):
        return "`[" + ", ".join(f'"{v}"' for v in value) + "]`"
    return f"`{value}`"


def _cell(text: str) -> str:
    """Text fit for a table cell: one line, pipes escaped, and ``<run_id>`` kept visible (outside
    backticks, Markdown would take it for an HTML tag)."""
    parts = text.replace("|", "\\|").replace("\n", " ").split("`")
    return "`".join(
        part if i % 2 else part.replace("<", "&lt;").replace(">", "&gt;")
        for i, part in enumerate(parts)
    )


def _flag(action: argparse.Action) -> str:
    option = action.option_strings[0]
    if isinstance(action, argparse.BooleanOptionalAction):
        return f"`{option}` / `{action.option_strings[1]}`"
    if action.nargs == 0:
        return f"`{option}`"
    if action.choices:
        return f"`{option} {'|'.join(map(str, action.choices))}`".replace("|", "\\|")
    return f"`{option} {action.metavar or action.dest.upper()}`"


def config_table() -> str:
    """Every key of the TOML file and ScanConfig: its flag, default and meaning, by group."""
    scan = find_command("scan")
    comments = field_comments(ScanConfig)
    rows: list[str] = []
    flagged: set[str] = set()
    for group in scan._action_groups:
        actions = [a for a in group._group_actions if a.dest in CONFIG_KEYS]
        if not actions:
            continue
        title = group.title or ""
        rows.append(f"| **{_cell(title)}** | | | |")
        for action in actions:
            flagged.add(action.dest)
            meaning = action.help or comments.get(action.dest, "")
            default = toml_value(action.dest, field_default(ScanConfig, action.dest))
            rows.append(f"| {_flag(action)} | `{action.dest}` | {default} | {_cell(meaning)} |")
    unflagged = sorted(CONFIG_KEYS - flagged)
    if unflagged:
        rows.append("| **TOML only** | | | |")
        for name in unflagged:
            default = toml_value(name, field_default(ScanConfig, name))
            rows.append(f"| | `{name}` | {default} | {_cell(comments.get(name, ''))} |")
    header = "| flag | TOML key | default | meaning |\n|---|---|---|---|\n"
    return header + "\n".join(rows)


# -- the datasets ----------------------------------------------------------------------------


def load_schema(name: str) -> dict[str, Any]:
    if name not in (*DATASETS, "manifest"):
        raise PluginError(f"no shipped schema {name!r}")
    resource = importlib.resources.files("fleetscan") / "schemas" / f"{name}.schema.json"
    schema: dict[str, Any] = json.loads(resource.read_text(encoding="utf-8"))
    return schema


def _type(schema: dict[str, Any]) -> str:
    kind = schema.get("type", "")
    names = [kind] if isinstance(kind, str) else list(kind)
    if "items" in schema and isinstance(schema["items"], dict) and "type" in schema["items"]:
        names = [f"array of {_type(schema['items'])}" if n == "array" else n for n in names]
    return " or ".join(names) or "any"


def _rows(properties: dict[str, Any], required: set[str], prefix: str = "") -> Iterator[str]:
    for name, schema in properties.items():
        notes: list[str] = []
        if "enum" in schema:
            notes.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"] if v is not None))
        if "const" in schema:
            notes.append(f"always `{schema['const']}`")
        if "maxLength" in schema:
            notes.append(f"at most {schema['maxLength']} characters")
        description = " ".join([schema.get("description", ""), *(f"({n})" for n in notes)])
        optional = "" if name in required else " (optional)"
        yield f"| `{prefix}{name}` | {_type(schema)}{optional} | {_cell(description.strip())} |"
        items = schema.get("items") if schema.get("type") == "array" else None
        nested = items if isinstance(items, dict) else schema
        if nested.get("properties"):
            inner = f"{prefix}{name}[]." if nested is items else f"{prefix}{name}."
            yield from _rows(nested["properties"], set(nested.get("required", ())), inner)


def schema_table(name: str) -> str:
    """A dataset's (or the manifest's) fields: name, JSON type, meaning, from its JSON Schema."""
    schema = load_schema(name)
    header = "| field | type | meaning |\n|---|---|---|\n"
    rows = _rows(schema["properties"], set(schema.get("required", ())))
    return header + "\n".join(rows)


# -- the library -----------------------------------------------------------------------------

_ROLE = re.compile(r":[a-z]+:`~?(?:[\w.]+\.)?(?P<name>[^`]+)`")


def markdown_docstring(doc: str) -> str:
    """reStructuredText as the docstrings write it, as Markdown: roles and ``literals``, ``::``."""
    doc = _ROLE.sub(lambda m: f"`{m['name']}`", doc)
    doc = doc.replace("``", "`")
    return re.sub(r"::$", ":", doc, flags=re.MULTILINE)


def _generated_doc(obj: Any) -> bool:
    """dataclasses invent a docstring (the signature) when a class has none."""
    return (inspect.getdoc(obj) or "").startswith(f"{obj.__name__}(")


def _split_parameters(text: str) -> tuple[list[str], str]:
    """``(a: int, *, b: X[int, str]) -> R`` -> (["a: int", "*", "b: X[int, str]"], " -> R")."""
    depth, start, parts = 0, 1, []
    for i, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0:
                parts.append(text[start:i].strip())
                return [p for p in parts if p], text[i + 1 :]
        elif char == "," and depth == 1:
            parts.append(text[start:i].strip())
            start = i + 1
    raise PluginError(f"cannot read the signature {text!r}")


class _Annotation(str):
    """An annotation the package wrote as a string (``from __future__ import annotations``),
    shown as written rather than quoted."""

    def __repr__(self) -> str:
        return str(self)


def _unquoted(obj: Any) -> str:
    signature = inspect.signature(obj)
    empty = inspect.Parameter.empty

    def plain(annotation: Any) -> Any:
        return _Annotation(annotation) if isinstance(annotation, str) else annotation

    parameters = [
        p.replace(annotation=plain(p.annotation)) if p.annotation is not empty else p
        for p in signature.parameters.values()
    ]
    returns = signature.return_annotation
    return str(
        signature.replace(
            parameters=parameters,
            return_annotation=plain(returns) if returns is not empty else returns,
        )
    )


def _signature(name: str, obj: Any) -> str:
    """``async def name(...) -> T``, one parameter a line when it would not fit in one."""
    if inspect.isclass(obj):
        if dataclasses.is_dataclass(obj):
            return f"class {name}(...)"  # its fields are listed below
        if "__init__" not in vars(obj):
            return f"class {name}"
        head, signature = f"class {name}", _unquoted(obj).split(" -> ")[0]
    else:
        asynchronous = inspect.iscoroutinefunction(obj) or inspect.isasyncgenfunction(obj)
        head = f"{'async def' if asynchronous else 'def'} {name}"
        signature = _unquoted(obj)
    if len(head + signature) <= 90:
        return head + signature
    parameters, returns = _split_parameters(signature)
    return head + "(\n" + "".join(f"    {p},\n" for p in parameters) + ")" + returns


def _fields_table(cls: type) -> str:
    """A dataclass's fields; a record's meanings come from its dataset's JSON Schema."""
    comments = field_comments(cls)
    dataset = getattr(cls, "dataset", None)
    if isinstance(dataset, str):
        properties = load_schema(dataset)["properties"]
        comments = {name: schema.get("description", "") for name, schema in properties.items()}
    rows = []
    for f in dataclasses.fields(cls):
        if f.init:
            meaning = _cell(markdown_docstring(comments.get(f.name, "")))
            rows.append(f"| `{f.name}` | `{_cell(str(f.type))}` | {meaning} |")
    return "| field | type | meaning |\n|---|---|---|\n" + "\n".join(rows)


#: The reference's sections, in reading order; every public name must be in exactly one.
API_SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Scanning",
        (
            "ScanConfig",
            "OrganizationConfig",
            "scan",
            "run_scan",
            "plan_scan",
            "finalize_run",
            "ScanResult",
            "ScanStats",
        ),
    ),
    (
        "Records",
        ("Record", "RecoveryPointRecord", "GatewayRecord", "ErrorRecord", "SCHEMA_VERSION"),
    ),
    (
        "Reading runs back",
        (
            "Run",
            "list_runs",
            "latest_run",
            "read_manifest",
            "read_records",
            "alist_runs",
            "alatest_run",
            "aread_manifest",
            "aread_records",
        ),
    ),
    ("Audit", ("audit", "Policy", "AuditResult")),
    ("Changes between runs", ("diff_runs", "RunDiff", "Change")),
    ("Errors", ("FleetscanError", "ConfigError", "DataError", "DiscoveryError", "SinkError")),
    ("Version", ("__version__",)),
)


def _entry(name: str) -> str:
    obj = getattr(fleetscan, name)
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        shown = repr(obj).replace("fleetscan._records.", "")
        return f"#### `{name}`\n\n`{name} = {shown}`"
    section = [f"#### `{name}`", f"```python\n{_signature(name, obj)}\n```"]
    if not _generated_doc(obj) and inspect.getdoc(obj):
        section.append(markdown_docstring(inspect.getdoc(obj) or ""))
    if obj is ScanConfig:
        section.append("Its fields are the TOML keys: see [Configuration](configuration.md).")
    elif inspect.isclass(obj) and dataclasses.is_dataclass(obj):
        section.append(_fields_table(obj))
    return "\n\n".join(section)


def api_reference() -> str:
    """Every name of ``fleetscan.__all__``: signature, docstring, and a dataclass's fields."""
    placed = [name for _, names in API_SECTIONS for name in names]
    public = set(fleetscan.__all__)
    if sorted(placed) != sorted(public):
        missing, extra = sorted(public - set(placed)), sorted(set(placed) - public)
        raise PluginError(
            f"API_SECTIONS must list every public name once: missing {missing}, not public {extra}"
        )
    parts: list[str] = []
    for title, names in API_SECTIONS:
        parts.append(f"### {title}")
        parts.extend(_entry(name) for name in names)
    return "\n\n".join(parts)
