"""The label-selector string syntax of ``kubectl -l`` and the API's ``labelSelector`` parameter.

Settings that choose objects by label (an operator shard's nodes and policies) are plain strings in
the environment and on the command line, so they use the syntax people already type::

    pool=a                      pool==a            pool!=a
    pool in (a,b)               pool notin (c)     gpu-pool       !gpu-pool
    pool=a,tier in (train,inference)               (comma: all must hold)

:func:`parse_selector` turns such a string into the :class:`~wattplane.api.selectors.LabelSelector`
model, so matching has one implementation with the API server's semantics (``!=`` and ``notin``
also match objects without the key, as they do there). The set-based ``>`` and ``<`` operators of
node affinity have no LabelSelector form and are refused with a message rather than half-supported.
Pure: no I/O, no Kubernetes client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from wattplane.api.selectors import LabelSelector, LabelSelectorRequirement

#: One label name: 63 characters at most, alphanumeric at both ends, ``-``, ``_`` and ``.`` inside.
_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
#: A DNS subdomain (the optional prefix of a key, before ``/``).
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
#: Tokens: operators and punctuation, else a run of anything else (a key, a value or a keyword).
_TOKEN = re.compile(r"\s*(==|!=|=|!|\(|\)|,|<|>|[^\s!=(),<>]+)")
_OPERATORS = ("==", "!=", "=", "!", "(", ")", ",", "<", ">")
_Op = Literal["=", "In", "NotIn", "Exists", "DoesNotExist"]


class SelectorSyntaxError(ValueError):
    """A selector string that does not parse; the message quotes it and says where and why."""


@dataclass(frozen=True)
class _Token:
    text: str
    at: int  # offset in the selector string, for messages


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None:  # pragma: no cover - the last alternative matches any non-space run
            raise SelectorSyntaxError(f"label selector {text!r}: cannot read position {pos}")
        out.append(_Token(match.group(1), match.start(1)))
        pos = match.end()
    return out


def check_key(key: str) -> str | None:
    """Why ``key`` is not a valid label key (``[prefix/]name``), or ``None`` when it is."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _SUBDOMAIN.match(prefix)):
        return f"key {key!r}: the prefix before '/' must be a DNS subdomain (lowercase, 253 characters at most)"
    if not _NAME.match(name):
        return (
            f"key {key!r}: the name must be 1 to 63 characters, alphanumeric at both ends, "
            "with only '-', '_' and '.' inside"
        )
    return None


def check_value(value: str) -> str | None:
    """Why ``value`` is not a valid label value, or ``None`` when it is (the empty value is valid)."""
    if value == "" or _NAME.match(value):
        return None
    return f"value {value!r}: must be empty or 1 to 63 characters, alphanumeric at both ends, with '-', '_', '.' inside"


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0

    def fail(self, why: str, token: _Token | None = None) -> SelectorSyntaxError:
        where = token.at if token is not None else len(self.text)
        return SelectorSyntaxError(f"label selector {self.text!r}, at position {where}: {why}")

    def peek(self) -> _Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> _Token | None:
        token = self.peek()
        self.i += token is not None
        return token

    def word(self, what: str) -> _Token:
        token = self.take()
        if token is None:
            raise self.fail(f"expected {what}, found the end")
        if token.text in _OPERATORS:
            raise self.fail(f"expected {what}, found {token.text!r}", token)
        return token

    def key(self) -> str:
        token = self.word("a label key")
        problem = check_key(token.text)
        if problem is not None:
            raise self.fail(problem, token)
        return token.text

    def value(self) -> str:
        token = self.peek()
        if token is None or token.text in (",", ")"):
            return ""  # ``key=`` selects the empty value, as on the API server
        token = self.word("a label value")
        problem = check_value(token.text)
        if problem is not None:
            raise self.fail(problem, token)
        return token.text

    def values(self) -> list[str]:
        opening = self.take()
        if opening is None or opening.text != "(":
            raise self.fail("expected '(' and a list of values", opening)
        out: list[str] = []
        while True:
            token = self.peek()
            if token is not None and token.text == ")" and not out:
                raise self.fail("'in' and 'notin' need at least one value", token)
            out.append(self.value())
            token = self.take()
            if token is None:
                raise self.fail("expected ',' or ')' to close the list of values")
            if token.text == ")":
                return out
            if token.text != ",":
                raise self.fail(f"expected ',' or ')', found {token.text!r}", token)

    def requirement(self) -> tuple[str, _Op, list[str]]:
        """``(key, operator, values)`` with the LabelSelector operators, ``"="`` for equality."""
        token = self.peek()
        if token is not None and token.text == "!":
            self.take()
            return self.key(), "DoesNotExist", []
        key = self.key()
        token = self.peek()
        if token is None or token.text == ",":
            return key, "Exists", []
        self.take()
        if token.text in ("=", "=="):
            return key, "=", [self.value()]
        if token.text == "!=":
            return key, "NotIn", [self.value()]
        if token.text in ("<", ">"):
            raise self.fail(
                f"{token.text!r} compares numbers (node affinity only); a label selector has no such operator", token
            )
        if token.text == "in":
            return key, "In", self.values()
        if token.text == "notin":
            return key, "NotIn", self.values()
        raise self.fail(
            f"expected an operator (=, ==, !=, in, notin) or ',' after key {key!r}, found {token.text!r}", token
        )

    def parse(self) -> LabelSelector:
        labels: dict[str, str] = {}
        expressions: list[LabelSelectorRequirement] = []
        while self.peek() is not None:
            key, operator, values = self.requirement()
            if operator == "=" and key not in labels:
                labels[key] = values[0]
            elif operator == "=":  # ``a=x,a=y``: both must hold (nothing matches), as on the API server
                expressions.append(LabelSelectorRequirement(key=key, operator="In", values=values))
            else:
                expressions.append(LabelSelectorRequirement(key=key, operator=operator, values=values))
            token = self.take()
            if token is None:
                break
            if token.text != ",":
                raise self.fail(f"expected ',' between requirements, found {token.text!r}", token)
            if self.peek() is None:
                raise self.fail("a requirement must follow ','")
        return LabelSelector(match_labels=labels, match_expressions=expressions)


def parse_selector(text: str) -> LabelSelector:
    """Parse a ``kubectl -l`` style selector; the empty string selects everything.

    Raises :class:`SelectorSyntaxError` (a ``ValueError``) naming the position and the problem.
    """
    return _Parser(text).parse()


def format_selector(selector: LabelSelector) -> str:
    """The selector as a string :func:`parse_selector` reads back to an equal selector (for logs)."""
    parts = [f"{k}={v}" for k, v in selector.match_labels.items()]
    for req in selector.match_expressions:
        if req.operator == "Exists":
            parts.append(req.key)
        elif req.operator == "DoesNotExist":
            parts.append(f"!{req.key}")
        else:
            parts.append(f"{req.key} {req.operator.lower()} ({','.join(req.values)})")
    return ",".join(parts)
