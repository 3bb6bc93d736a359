"""How a config field is declared and checked, for the dataclasses in gptlab.config.

A field's type is read off its annotation and enforced before any rule compares values, so a value
of any type from a JSON file, a form or a --flag ends as a ConfigError that names the field. Every
number must be finite, every whole number whole (never truncated), and every size a user can type
stays within its `bounds`: a context length of 1e22 passed every "positive" check once and then
asked the data code for 1e23 tokens.

No torch import here (config imports this module).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import field, fields
from typing import Any


class ConfigError(ValueError):
    """A setting a user gave is out of range; the message says how to fix it."""


def check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def setting(default, help: str, *, label: str | None = None, choices: tuple | None = None,
            range: tuple[float, float] | None = None, step: float | None = None, off: Any = None,
            bounds: tuple[int, int] | None = None):
    """A config field with what a form or a --flag needs to show it: a one-line help, the choices or
    the range of sensible values (a slider's ends, not a validation rule), `off`, the form value
    that means None ("0: off") for a setting a user can switch off, and `bounds`, the smallest and
    largest value validation accepts (a rule, which forms and flags can show)."""
    return field(default=default, metadata={"help": help, "label": label, "choices": choices, "range": range,
                                            "step": step, "off": off, "bounds": bounds})


def shown(value) -> str:
    """A value as a message quotes it: 1e+22 rather than 23 digits, 65,536 rather than 65536."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if abs(value) < 10**20:
            return f"{value:,}"
        try:
            return f"{float(value):.3g}"
        except OverflowError:  # beyond a float: 1e309 and up
            # str() itself refuses ints over 4,300 digits
            return f"a number with about {int(abs(value).bit_length() * math.log10(2)) + 1} digits"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def whole(value) -> bool:
    """Whether a number is a whole one (3 and 3.0 are; 1.5, inf and nan are not)."""
    if isinstance(value, numbers.Integral):
        return not isinstance(value, bool)
    try:
        return _is_number(value) and math.isfinite(value) and value == int(value)
    except OverflowError:  # a Fraction beyond a float
        return False


def _finite_float(value) -> float | None:
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return number if math.isfinite(number) else None


def check_types(config) -> None:
    """Each field's value has its annotated type, or a ConfigError names the field. Whole numbers
    given as floats (3.0, from JSON or a form) become ints and numbers become floats where a float
    is declared, so the rules after this compare plain, finite Python numbers."""
    for f in fields(config):
        value, kind = getattr(config, f.name), f.type.removesuffix(" | None")
        if value is None and f.type.endswith("| None"):
            continue
        if kind == "bool":
            check(isinstance(value, bool), f"{f.name} must be true or false, got {shown(value)}.")
        elif kind == "str":
            check(isinstance(value, str), f"{f.name} must be text, got {shown(value)}.")
        elif kind == "int":
            check(whole(value), f"{f.name} must be a whole number, got {shown(value)}.")
            object.__setattr__(config, f.name, int(value))
            if abs(int(value)) >= 2**64:  # beyond every bound: refused before a rule's message quotes it
                _check_bound(f, int(value))
        elif kind == "float":
            optional = " or None" if f.type.endswith("| None") else ""
            check(_is_number(value), f"{f.name} must be a number{optional}, got {shown(value)}.")
            number = _finite_float(value)
            check(number is not None, f"{f.name} must be a finite number, got {shown(value)}.")
            object.__setattr__(config, f.name, number)


def _check_bound(f, value) -> None:
    low, high = f.metadata.get("bounds") or (-(2**63), 2**63 - 1)
    check(low <= value <= high, f"{f.name} must be between {low:,} and {high:,}, got {shown(value)}.")


def check_bounds(config) -> None:
    """Each number with `bounds` in its setting lies within them."""
    for f in fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("bounds") is not None and value is not None:
            _check_bound(f, value)


def from_form(cls, values: dict[str, Any], **fixed):
    """A config from form values, where numbers arrive as floats and "off" as 0 or an empty box: the
    one place that turns an `off` value into None. Keys of other configs are ignored, so one form
    can hold the settings of several."""
    out = dict(fixed)
    for f in fields(cls):
        if f.name not in values or f.name in fixed:
            continue
        value, off = values[f.name], f.metadata.get("off")
        if off is not None and (value is None or value == "" or (value == off and not isinstance(value, bool))):
            value = None
        out[f.name] = value
    return cls(**out)


def known(cls, values: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    check(not unknown, f"Unknown {cls.__name__} setting(s): {', '.join(unknown)}. Known: {', '.join(sorted(names))}.")
    return values
