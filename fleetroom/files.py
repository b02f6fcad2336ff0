"""Files a user writes (load-test scenarios, job files): strict pydantic models, one line per problem.

Each model forbids unknown keys and non-finite numbers; a problem reads `FILE: key.path: what is
wrong`, e.g. `small.toml: stages[2].down_s: must be a number within 0..1e+07, not -1`.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from fleetroom.common import finite, shown, whole

M = TypeVar("M", bound=BaseModel)
STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
"""Every file model's configuration: unknown keys, and inf and nan, are problems."""

_TYPE_NAMES = {
    "string_type": "a string", "dict_type": "a table", "model_type": "a table", "model_attributes_type": "a table",
    "list_type": "a list", "tuple_type": "a list", "int_type": "an integer", "float_type": "a number",
}


class FileError(ValueError):
    """A file that cannot be used: one line per problem, each naming the file and the key."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def ranged(lo: float, hi: float, *, above: bool = False) -> BeforeValidator:
    """A file key's number within lo..hi (above lo, if asked), as the flags' `finite` checks it."""
    return BeforeValidator(finite(lo, hi, above=above).check)


def counted(lo: int, hi: int) -> BeforeValidator:
    """A file key's integer within lo..hi, as the flags' `whole` checks it."""
    return BeforeValidator(whole(lo, hi).check)


def key_in(names: Iterable[str]) -> BeforeValidator:
    """A table key that must be one of `names` (the table's own fields are its keys, as in a mix)."""
    known = tuple(names)

    def check(key: object) -> object:
        if key not in known:
            raise ValueError(f"unknown key {shown(key)} (known: {', '.join(known)})")
        return key

    return BeforeValidator(check)


def in_order(names: Iterable[str]) -> Callable[[Mapping[str, float]], dict[str, float]]:
    """An after-validator that puts a table's keys in the order of `names`, whatever the file's order."""
    order = {name: i for i, name in enumerate(names)}
    return lambda table: dict(sorted(table.items(), key=lambda item: order[item[0]]))


def shares(names: Iterable[str]) -> Callable[[Mapping[str, float]], dict[str, float]]:
    """An after-validator for a mix: shares in the order of `names` that sum to 1."""
    ordered = in_order(names)

    def check(table: Mapping[str, float]) -> dict[str, float]:
        total = sum(table.values())
        if not table or abs(total - 1.0) > 1e-6:
            raise ValueError(f"shares must sum to 1 (got {total:g})")
        return ordered(table)

    return check


def validated(model: type[M], data: object, where: str, *, tags: Iterable[str] = ()) -> M:
    """`data` as a `model`, or a `FileError` with one line per problem; `tags` name a union's members."""
    union_tags = tuple(tags)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise FileError(f"{where}: {_line(error, union_tags)}" for error in exc.errors(include_url=False)) from None


def read_data(path: Path, what: str, *, toml: bool | None = None) -> dict[str, Any]:
    """The table a TOML or JSON file holds (TOML if `toml`, or by default if named *.toml); else a `FileError`."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FileError([f"cannot read {what} {path}: {exc.strerror}"]) from None
    if toml is None:
        toml = path.suffix.lower() == ".toml"
    try:
        data = tomllib.loads(raw.decode()) if toml else json.loads(raw)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FileError([f"{path} is not valid {'TOML' if toml else 'JSON'}: {exc}"]) from None
    if not isinstance(data, dict):
        raise FileError([f"{path}: expected one table of keys, got {type(data).__name__}"])
    return data


def _line(error: ErrorDetails, tags: tuple[str, ...]) -> str:
    """One validation error as `key.path: what is wrong`."""
    loc, kind, ctx = list(error["loc"]), error["type"], error.get("ctx", {})
    if kind == "extra_forbidden":
        return _at(loc[:-1], tags, f"unknown key {shown(loc[-1])}")
    if loc and loc[-1] == "[key]":  # a table's key was refused: the problem is in the table
        loc = loc[:-2]
    if kind == "value_error":
        message = str(ctx["error"])
    elif kind == "union_tag_invalid":
        loc.append("kind")
        message = f"{shown(ctx['tag'])} is not one of {_options(ctx['expected_tags'])}"
    elif kind == "union_tag_not_found":
        loc.append("kind")
        message = f"missing (one of {', '.join(tags)})"
    elif kind in ("literal_error", "enum"):
        message = f"{shown(error['input'])} is not one of {_options(ctx['expected'])}"
    elif kind in _TYPE_NAMES:
        message = f"expected {_TYPE_NAMES[kind]}, got {shown(error['input'])}"
    else:
        message = error["msg"]
    return _at(loc, tags, message)


def _at(loc: list[int | str], tags: tuple[str, ...], message: str) -> str:
    """`message` after the key path, e.g. `stages[0].kind: ...` (a union member's tag is left out)."""
    path = ""
    for i, item in enumerate(loc):
        if isinstance(item, int):
            path += f"[{item}]"
        elif not (i and isinstance(loc[i - 1], int) and item in tags):
            path += f".{item}" if path else item
    return f"{path}: {message}" if path else message


def _options(expected: object) -> str:
    """pydantic's "'a', 'b' or 'c'" as "a, b, c"."""
    return ", ".join(re.findall(r"'([^']*)'", str(expected)))
