"""Describe a pydantic-settings model to people: ``--help`` text, command-line flags, a Markdown table.

The settings models are the one source of truth: each field's docstring is its description
(``use_attribute_docstrings``), its type and bounds give the accepted values, ``env_prefix`` and any
validation alias give the environment variables. ``wattplane-agent --help``, ``wattplane-operator
--help`` and ``docs/settings.md`` are all rendered from them here, so they cannot drift apart; the
flags themselves are built from the same fields, so a flag's help is the setting's description.
"""

from __future__ import annotations

import argparse
import textwrap
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import annotated_types
from pydantic import AliasChoices, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings


@dataclass(frozen=True)
class SettingDoc:
    """One setting as people see it."""

    name: str
    """Field name (what the code calls it)."""
    env: tuple[str, ...]
    """Environment variables that set it, preferred first."""
    flag: str | None
    """Command-line flag that sets it (and wins over the environment), if any."""
    default: str
    """The default, as text."""
    values: str
    """Accepted values: choices, or the type with its bounds."""
    description: str
    """What it does (the field's docstring)."""


def describe(model: type[BaseSettings], flags: Mapping[str, str] | None = None) -> list[SettingDoc]:
    """Every field of ``model``, in declaration order; ``flags`` maps field names to their flags."""
    flags = flags or {}
    unknown = set(flags) - set(model.model_fields)
    if unknown:
        raise ValueError(f"flags for settings {model.__name__} does not have: {sorted(unknown)}")
    prefix = str(model.model_config.get("env_prefix", ""))
    out = []
    for name, field in model.model_fields.items():
        if not field.description:
            raise ValueError(f"{model.__name__}.{name} has no description (a docstring under the field)")
        out.append(
            SettingDoc(
                name=name,
                env=_env_names(prefix, name, field),
                flag=flags.get(name),
                default=_default(field),
                values=_values(field),
                description=" ".join(field.description.split()),
            )
        )
    return out


def _env_names(prefix: str, name: str, field: FieldInfo) -> tuple[str, ...]:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(choice for choice in alias.choices if isinstance(choice, str))
    if isinstance(alias, str):
        return (alias,)
    return (f"{prefix}{name}".upper(),)


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, tuple | list):
        return ",".join(map(str, value)) if value else "empty"
    if isinstance(value, str) and not value:
        return "empty"
    return str(value)


def _choices(annotation: Any) -> list[str] | None:
    """The allowed strings of a ``Literal`` (``None`` for other types)."""
    if typing.get_origin(annotation) is typing.Literal:
        return [str(arg) for arg in typing.get_args(annotation)]
    return None


def _values(field: FieldInfo) -> str:
    annotation = field.annotation
    choices = _choices(annotation)
    if choices is not None:
        return " | ".join(choices)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if typing.get_origin(annotation) in (typing.Union, _UnionType) and len(args) == 1 else annotation
    if typing.get_origin(base) is tuple:
        kind = "comma-separated list"
    else:
        kinds: dict[object, str] = {bool: "true | false", int: "integer", float: "number", str: "text", Path: "path"}
        kind = kinds.get(base, "text")
    bounds = []
    for item in field.metadata:
        for attr, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if isinstance(item, annotated_types.BaseMetadata) and hasattr(item, attr):
                bounds.append(f"{word} {getattr(item, attr):g}")
    return f"{kind}, {' and '.join(bounds)}" if bounds else kind


_UnionType = type(int | None)


def help_epilog(docs: Sequence[SettingDoc], *, width: int = 79) -> str:
    """The settings part of ``--help``: one block per setting (argparse prints it verbatim)."""
    lines = ["settings (environment variables; a flag, where there is one, wins over the environment):", ""]
    for doc in docs:
        head = " or ".join(doc.env) + (f" ({doc.flag})" if doc.flag else "")
        lines.append(f"  {head}")
        lines.append(f"      {doc.values}; default: {doc.default}")
        lines.extend(textwrap.wrap(doc.description, width=width, initial_indent="      ", subsequent_indent="      "))
    return "\n".join(lines)


def markdown_table(docs: Sequence[SettingDoc]) -> str:
    """A Markdown table of the settings (for docs/settings.md)."""
    rows = ["| Environment variable | Flag | Default | Values | Meaning |", "| --- | --- | --- | --- | --- |"]
    for doc in docs:
        env = "<br>".join(f"`{name}`" for name in doc.env)
        flag = f"`{doc.flag}`" if doc.flag else ""
        values, description = (text.replace("|", "\\|") for text in (doc.values, doc.description))
        rows.append(f"| {env} | {flag} | `{doc.default}` | {values} | {description} |")
    return "\n".join(rows)


def add_flags(parser: argparse.ArgumentParser, docs: Sequence[SettingDoc], model: type[BaseSettings]) -> None:
    """Add a flag for every setting that has one, with the setting's description as its help.

    Flags default to ``None`` (not given), so :func:`flag_overrides` passes on only what was typed;
    the settings model validates the value like an environment variable.
    """
    for doc in docs:
        if doc.flag is None:
            continue
        choices = _choices(model.model_fields[doc.name].annotation)
        upper = bool(choices) and all(c.isupper() for c in choices or ())
        extra: dict[str, Any] = {"type": str.upper} if upper else {}  # log levels: `info` works too
        parser.add_argument(
            doc.flag,
            dest=doc.name,
            default=None,
            choices=choices,
            metavar=None if choices else doc.name.upper(),
            help=f"{doc.description} (env {doc.env[0]}; default: {doc.default})".replace("%", "%%"),
            **extra,
        )


def flag_overrides(args: argparse.Namespace, docs: Sequence[SettingDoc]) -> dict[str, Any]:
    """The settings given as flags, by field name (to pass to the settings model)."""
    return {
        doc.name: getattr(args, doc.name)
        for doc in docs
        if doc.flag is not None and getattr(args, doc.name, None) is not None
    }


def one_line(exc: ValidationError, docs: Sequence[SettingDoc]) -> str:
    """A settings validation error as one line that names the variable (and flag) to fix."""
    by_name = {doc.name: doc for doc in docs}
    parts = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        doc = by_name.get(field)
        where = (doc.env[0] + (f" ({doc.flag})" if doc.flag else "")) if doc else field or "settings"
        parts.append(f"{where}: {error['msg']} (got {error.get('input')!r})")
    return "invalid settings: " + "; ".join(parts)


Settings = TypeVar("Settings", bound=BaseSettings)


def settings_parser(
    prog: str, description: str | None, model: type[BaseSettings], flags: Mapping[str, str]
) -> argparse.ArgumentParser:
    """A program's command line: a flag for each setting in ``flags``, every setting listed in ``--help``."""
    docs = describe(model, flags)
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=help_epilog(docs),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_flags(parser, docs, model)
    return parser


def parse_settings(
    parser: argparse.ArgumentParser, model: type[Settings], flags: Mapping[str, str], argv: list[str] | None
) -> Settings:
    """The settings from the environment with the flags in ``argv`` on top; a bad value exits with one line."""
    docs = describe(model, flags)
    try:
        return model(**flag_overrides(parser.parse_args(argv), docs))
    except ValidationError as exc:
        parser.error(one_line(exc, docs))
