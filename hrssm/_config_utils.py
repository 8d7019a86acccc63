"""The one config mechanism behind `ModelConfig` (hrssm/config.py), `TrainConfig` (hrssm/train_config.py) and
`ViewConfig` (hrssm/data/views.py): dataclasses that derive from `Config`.

    cfg = build(ModelConfig, {"rssm": {"deter": 256}})                     # a mapping -> a checked dataclass
    data = merge(yaml_data, parse_overrides(cli_pairs(["--optim.lr", "3e-4"])))   # nested mappings, key by key

- one build (`build`): an unknown key raises, listing the valid keys of its section;
- types come from the field annotations: a mapping for a dataclass field is built into that dataclass, a list for a
  tuple field becomes a tuple, a `Literal[...]` field accepts only its values;
- one merge (`merge`): overrides do not need to know the defaults, `build` refuses keys that do not exist;
- one set of validators (`integer`, `number`, `one_of`), called from each class's `validate()` through
  `Config.check`, with messages ``section.key=value must be ...``;
- one error type: anything wrong while a config is built is an `hrssm.errors.ConfigError` (a `ValueError`);
- one description (`describe`): every key with its value and meaning, the meaning being the field's
  ``metadata["help"]`` or else its comment in the source (on the field's line, or the comment lines right above it),
  so `--help` cannot drift from the code.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import math
import textwrap
import tokenize
from collections.abc import Callable, Mapping, Sequence
from types import NoneType, UnionType
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from .errors import ConfigError, HrssmError

C = TypeVar("C", bound="Config")


class Config:
    """Base of the config dataclasses: on construction each field is coerced from its annotation, then `validate()`
    runs, so an instance is always a checked config."""

    section: ClassVar[str] = ""  # how messages name its keys, e.g. "model.rssm" -> "model.rssm.deter=0 must be ..."

    def __post_init__(self) -> None:
        for name, kind in _field_types(type(self)).items():
            setattr(self, name, _coerce(kind, getattr(self, name), self.key(name)))
        self.validate()

    def validate(self) -> None:
        """Checks of the values beyond their type (each section overrides this)."""

    @classmethod
    def key(cls, name: str) -> str:
        """The full name of a field in messages and overrides: "section.name"."""
        return f"{cls.section}.{name}" if cls.section else name

    def check(self, validator: Callable[..., None], *names: str, **limits: Any) -> None:
        """Run `validator` (`integer`, `number` or `one_of`) on each named field."""
        for name in names:
            validator(self.key(name), getattr(self, name), **limits)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        return build(cls, data)


def build(cls: type[C], data: Mapping[str, Any] | C) -> C:
    """An instance of the config dataclass `cls` from a mapping of its fields (missing ones keep their default).
    Any `ValueError` while building (a validator, a check in `validate`) comes out as a `ConfigError`; the
    project's own errors (e.g. an `ExportError` of `init_from`) keep their type."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{cls.section or 'the config'} must be a mapping of keys to values, got {data!r}")
    valid = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    unknown = [k for k in data if k not in valid]
    if unknown:
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(cls.key(k) for k in unknown)}; "
                          f"valid keys{' of ' + cls.section if cls.section else ''}: {', '.join(sorted(valid))}")
    try:
        return cls(**data)
    except HrssmError:
        raise
    except ValueError as err:
        raise ConfigError(str(err)) from err


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` merged in: nested mappings key by key, any other value replaced."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def describe(config: Config) -> list[tuple[str, Any, str]]:
    """(full key, value, meaning) of every field of `config` and of its sections, depth first in field order."""
    rows: list[tuple[str, Any, str]] = []
    meanings = field_help(type(config))
    for f in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, f.name)
        rows += describe(value) if isinstance(value, Config) else [(config.key(f.name), value, meanings[f.name])]
    return rows


@functools.cache
def field_help(cls: type) -> dict[str, str]:
    """{field: meaning}: ``metadata["help"]``, else the comment on the field's last line, else the comment lines
    right above it ("" when there is none, or the source cannot be read)."""
    out = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (e.g. a frozen application): the metadata only
        return out
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    lines = source.splitlines()
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        name = node.target.id if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) else None
        if name not in out or out[name]:  # not a field, or its metadata says it
            continue
        text, above = comments.get(node.end_lineno or node.lineno), []
        row = node.lineno - 1
        while text is None and row in comments and lines[row - 1].lstrip().startswith("#"):
            above.insert(0, comments[row])
            row -= 1
        out[name] = text if text is not None else " ".join(above)
    return out


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(kind: Any, value: Any, key: str) -> Any:
    """`value` as the annotation `kind` asks, or a `ConfigError` naming `key`: a section built from a mapping, a
    tuple from a list of the right length, one string as a one-item list of strings, a Literal, bool, int or float
    checked (the ranges are the section validators' job), a number for a string field made a string (YAML reads
    `output_dir: 2024` as a number)."""
    origin, args = get_origin(kind), get_args(kind)
    if isinstance(kind, type) and issubclass(kind, Config):
        return build(kind, value)
    if origin in (Union, UnionType) and NoneType in args:
        if value is None:
            return None
        rest = [a for a in args if a is not NoneType]
        return _coerce(rest[0], value, key) if len(rest) == 1 else value
    if origin is Literal:
        if value is False and "no" in args:  # YAML 1.1 reads a bare `no` as false
            value = "no"
        one_of(key, value, args)
    elif origin is tuple:
        fixed = Ellipsis not in args
        if not isinstance(value, (list, tuple)) or (fixed and len(value) != len(args)):
            size = f" of {len(args)} values" if fixed else ""
            example = ", ".join("abcdefgh"[: len(args)] if fixed else "ab")
            raise ConfigError(f"{key}={value!r} must be a list{size}, like --{key} '[{example}]'")
        kinds = args if fixed else (args[0],) * len(value)
        return tuple(_coerce(k, v, f"{key}[{i}]") for i, (k, v) in enumerate(zip(kinds, value)))
    elif origin is list:
        if isinstance(value, str) and args == (str,):
            return [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r} must be a list, like --{key} '[a, b]'")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)] if args else list(value)
    elif kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} must be true or false")
    elif kind is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r} must be a string")
    elif kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key}={value!r} must be an integer")
    elif kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"{key}={value!r} must be a number")
    return value


# -- validators: each raises ValueError("key=value must be ...") ---------------------------------------------------


def integer(key: str, value: Any, low: int = 1) -> None:
    """An int (not a bool) >= `low`."""
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
        raise ConfigError(f"{key}={value!r} must be " + ("a positive integer" if low == 1 else f"an integer >= {low}"))


def number(key: str, value: Any, low: float = 0.0, high: float = math.inf, *, low_open: bool = False,
           high_closed: bool = False) -> None:
    """An int or float in the interval from `low` (included unless `low_open`) to `high` (excluded unless
    `high_closed`)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value > low if low_open else value >= low)
    ok = ok and (value <= high if high_closed else value < high)
    if not ok:
        where = (f"a number {'>' if low_open else '>='} {low:g}" if high == math.inf else
                 f"in {'(' if low_open else '['}{low:g}, {high:g}{']' if high_closed else ')'}")
        raise ConfigError(f"{key}={value!r} must be {where}")


def one_of(key: str, value: Any, allowed: Sequence[Any]) -> None:
    """One of `allowed`."""
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} must be one of {', '.join(map(repr, allowed))}")


# -- command-line overrides ------------------------------------------------------------------------------------------


def cli_pairs(args: list[str]) -> list[str]:
    """["--optim.lr", "3e-4", "--views.mode=repeat"] -> ["optim.lr=3e-4", "views.mode=repeat"]."""
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise ConfigError(f"unexpected argument {arg!r}: overrides look like --section.key value")
        key = arg[2:]
        if "=" in key:
            out.append(key)
            i += 1
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            out.append(f"{key}={args[i + 1]}")
            i += 2
        else:
            raise ConfigError(f"override {arg} needs a value: {arg} VALUE or {arg}=VALUE")
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """["loss.recon_scale=10", "rssm.local_grid=0"] -> {"loss": {"recon_scale": 10}, "rssm": {"local_grid": 0}}.

    Values are parsed as YAML scalars (numbers, booleans, null, lists); anything else stays a string.
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. loss.recon_scale=10)")
        node = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        value = yaml.safe_load(raw)
        if isinstance(value, str):
            try:  # YAML 1.1 reads "1e-4" (no dot) as a string
                value = float(value)
            except ValueError:
                pass
        node[leaf] = value
    return out
