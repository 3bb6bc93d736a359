"""Reproduce and share: the current settings as a command, a settings file, and a link."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, Sequence

from gptlab.config import DEFAULT_PRESET, ConfigError
from gptlab.data import DataError
from gptlab.experiments.settings import (Settings, load_settings_json, settings_from_query, settings_json,
                                         settings_query, train_command)
from gptlab.service.base import SOURCES, LabBase


class Sharing(LabBase):
    def _settings(self, preset: str | None, tokenizer: str, settings: Mapping[str, Any]) -> Settings:
        model, train = self._configs(tokenizer, settings)  # the form's values, checked as Start checks them
        return Settings(preset or DEFAULT_PRESET, model, train)

    def command(self, *, preset: str | None, tokenizer: str, settings: Mapping[str, Any], source: str,
                files: Sequence[str] | None = None) -> str:
        """The `python -m gptlab train` command that trains what Start would (the data named as the
        user has it: their files' names, or a file they save the pasted text into)."""
        data = None
        if source == SOURCES[1]:
            data = [Path(str(f)).name for f in files or []] or ["your-text.txt"]
        elif source == SOURCES[2]:
            data = ["pasted-text.txt"]
        return train_command(self._settings(preset, tokenizer, settings), data=data)

    def save_settings(self, *, owner: str | None, preset: str | None, tokenizer: str,
                      settings: Mapping[str, Any]) -> Path:
        """The settings as a small JSON file to download (Load settings reads it back)."""
        text = settings_json(self._settings(preset, tokenizer, settings))
        folder = self.downloads_root / "_settings" / self.owner_or_new(owner)[:16]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "gptlab-settings.json"
        path.write_text(text, encoding="utf-8")
        return path

    def load_settings(self, *, upload: str | None) -> dict[str, Any]:
        """Form values (the preset, the tokenizer and every setting) from a settings file."""
        if not upload:
            raise DataError("Choose a settings .json file (saved with Save settings) first.")
        path = Path(str(upload))
        if path.stat().st_size > 64 * 1024:
            raise ConfigError("A settings file is a few hundred bytes; that one is far larger. Choose the .json "
                              "file that GPT Lab saved.")
        return _form_values(load_settings_json(path.read_bytes()))

    def settings_link(self, *, preset: str | None, tokenizer: str, settings: Mapping[str, Any]) -> str:
        """The query string (after "?") of a link that opens the app with these settings."""
        return settings_query(self._settings(preset, tokenizer, settings))

    def settings_from_link(self, *, query: Mapping[str, str] | str | None) -> dict[str, Any] | None:
        """Form values from a link's query parameters, or None when it carries no settings."""
        found = settings_from_query(query or {})
        return _form_values(found) if found is not None else None


def _form_values(settings: Settings) -> dict[str, Any]:
    values = {**asdict(settings.model), **asdict(settings.train), "preset": settings.preset}
    values.pop("vocab_size", None)
    return values
