"""A run's settings (a preset plus overrides) in the three forms people share them: the exact
`python -m gptlab train` command, a small JSON file, and a URL query.

Each form names only what differs from the preset, so it stays short and survives a change of the
preset's other values; reading one back validates every value with the configs' own rules, and an
unknown or invalid setting is a ConfigError that names the field and the fix.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence
from urllib.parse import parse_qsl, urlencode

from gptlab.config import DEFAULT_PRESET, PRESETS, ConfigError, ModelConfig, TrainConfig

FORMAT = "gptlab-settings"
VERSION = 1
# Where the run happens, not what it is: a command or file from one machine must work on another.
NOT_SHARED = {"vocab_size", "device"}
MAX_FILE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Settings:
    """A preset and the configs a run starts from (the tokenizer is TrainConfig's)."""
    preset: str
    model: ModelConfig
    train: TrainConfig

    @classmethod
    def of(cls, preset: str, overrides: Mapping[str, Any] | None = None) -> Settings:
        """The preset with `overrides` (setting name -> value, of either config) on top."""
        _check_preset(preset)
        overrides = dict(overrides or {})
        _check_names(overrides)
        model = {k: v for k, v in overrides.items() if k in _names(ModelConfig)}
        train = {k: v for k, v in overrides.items() if k in _names(TrainConfig)}
        return cls(preset, ModelConfig.preset(preset, **model), TrainConfig.preset(preset, **train))

    def overrides(self) -> dict[str, Any]:
        """The settings that differ from the preset's, in field order."""
        base = Settings.of(self.preset)
        out = {}
        for config, default in ((self.model, base.model), (self.train, base.train)):
            for f in fields(config):
                value = getattr(config, f.name)
                if f.name not in NOT_SHARED and value != getattr(default, f.name):
                    out[f.name] = value
        return out


def _names(cls) -> set[str]:
    return {f.name for f in fields(cls)}


def _check_preset(preset: Any) -> None:
    if preset not in PRESETS:
        raise ConfigError(f"Unknown preset {preset!r}. Choose one of: {', '.join(PRESETS)}.")


def _check_names(values: Mapping[str, Any]) -> None:
    known = (_names(ModelConfig) | _names(TrainConfig)) - {"vocab_size"}  # the tokenizer sets it
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"Unknown setting(s): {', '.join(unknown)}. Use the names of the Train tab's settings "
                          f"(or `python -m gptlab train --help`), such as learning_rate or n_layer.")


def _field_type(name: str) -> str:
    for cls in (ModelConfig, TrainConfig):
        for f in fields(cls):
            if f.name == name:
                return f.type
    raise ConfigError(f"Unknown setting {name!r}.")


# -- the command ---------------------------------------------------------------------------------

def _flag_value(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)  # repr round-trips a float exactly; f"{x:g}" would not
    return str(value)


def train_command(settings: Settings, *, data: Sequence[str] | None = None, out: str | None = None) -> str:
    """The `python -m gptlab train` command that trains exactly these settings."""
    parts = ["python", "-m", "gptlab", "train"]
    if data:
        parts += ["--data", *data]
    if settings.preset != DEFAULT_PRESET:
        parts += ["--preset", settings.preset]
    for name, value in settings.overrides().items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + name.replace("_", "-"))
        elif value is None:  # a setting switched off: each such field has an `off` value
            parts += [flag, _flag_value(_off_value(name))]
        else:
            parts += [flag, _flag_value(value)]
    if out:
        parts += ["--out", out]
    return " ".join(shlex.quote(p) for p in parts)


def _off_value(name: str) -> Any:
    for cls in (ModelConfig, TrainConfig):
        for f in fields(cls):
            if f.name == name:
                return f.metadata["off"]
    raise ConfigError(f"Unknown setting {name!r}.")


# -- the file ------------------------------------------------------------------------------------

def settings_json(settings: Settings) -> str:
    return json.dumps({"format": FORMAT, "version": VERSION, "preset": settings.preset,
                       "settings": settings.overrides()}, indent=2) + "\n"


def load_settings_json(text: str | bytes) -> Settings:
    """Settings from a file settings_json wrote; anything else is a ConfigError that says what is wrong."""
    if isinstance(text, bytes):
        if len(text) > MAX_FILE_BYTES:
            raise ConfigError(f"A settings file is a few hundred bytes; this one has {len(text):,}. "
                              "Choose the .json file that GPT Lab saved.")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError("That settings file is not UTF-8 text. Choose the .json file that GPT Lab saved.") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"That settings file is not valid JSON ({e.msg} at line {e.lineno}). "
                          "Choose the .json file that GPT Lab saved, or fix the file.") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f'That is not a GPT Lab settings file: it needs "format": "{FORMAT}". Save one with '
                          "Save settings on the Train tab.")
    if data.get("version") != VERSION:
        raise ConfigError(f"This settings file has version {data.get('version')!r}; this GPT Lab reads version "
                          f"{VERSION}. Save the settings again with this version.")
    values = data.get("settings", {})
    if not isinstance(values, dict):
        raise ConfigError('"settings" in a settings file must be an object of name: value pairs.')
    return Settings.of(data.get("preset", DEFAULT_PRESET), values)


# -- the URL -------------------------------------------------------------------------------------

def settings_query(settings: Settings) -> str:
    """A URL query (without the "?") that restores these settings on page load."""
    pairs = [("preset", settings.preset)]
    for name, value in settings.overrides().items():
        pairs.append((name, _off_value(name) if value is None else value))
    return urlencode([(k, _flag_value(v).lower() if isinstance(v, bool) else _flag_value(v)) for k, v in pairs])


def settings_from_query(query: str | Mapping[str, str]) -> Settings | None:
    """The settings a URL's query asks for, or None if it names none. Values arrive as text and are
    read by each field's type; the configs then judge them."""
    pairs = parse_qsl(query, keep_blank_values=True) if isinstance(query, str) else list(query.items())
    values = {k: v for k, v in pairs}
    preset = values.pop("preset", None)
    if preset is None and not values:
        return None
    _check_names(values)
    return Settings.of(preset or DEFAULT_PRESET, {name: _parse(name, text) for name, text in values.items()})


def _parse(name: str, text: str, where: str = "the link") -> Any:
    kind = _field_type(name).removesuffix(" | None")
    off = _off_value(name)
    try:
        if kind == "bool":
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if kind == "int":
            number = float(text)
            if not math.isfinite(number) or number != int(number):
                raise ValueError
            value = int(number)
        elif kind == "float":
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
        else:
            return text
    except ValueError:
        what = {"int": "a whole number", "float": "a number", "bool": "true or false"}[kind]
        fix = "Fix the link, or set it on the Train tab." if where == "the link" else f"Fix {where}."
        raise ConfigError(f"{name} in {where} must be {what}, got {text!r}. {fix}") from None
    return None if off is not None and value == off else value
