"""Form components built from the config dataclasses' fields.

A field's label, one-line help, choices, range and "off" value live once, in its `setting(...)` in
gptlab/config.py; the CLI's flags read the same metadata.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from gptlab.config import field_info


def _shown(value) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def _within_bounds(component, payload) -> None:
    """Gradio's own out-of-range message ("Value 0 is less than minimum value 1.") names no field,
    so on a form of twenty it leaves the user guessing; this one names the box and what it takes."""
    low, high = component.minimum, component.maximum
    if payload is None or (low is None or payload >= low) and (high is None or payload <= high):
        return
    takes = f"between {_shown(low)} and {_shown(high)}" if low is not None and high is not None else \
        (f"at least {_shown(low)}" if low is not None else f"at most {_shown(high)}")
    raise gr.Error(f"{component.label.capitalize()} must be {takes}, not {_shown(payload)}. Change it and try again.")


# Subclasses, not a wrapped instance method: the app's updates rebuild a component from its class
# and constructor arguments, which would drop an instance's attribute.
class Number(gr.Number):
    is_template = True  # drawn by Gradio's Number

    def preprocess(self, payload):
        _within_bounds(self, payload)
        return super().preprocess(payload)


class Slider(gr.Slider):
    is_template = True  # drawn by Gradio's Slider

    def preprocess(self, payload):
        _within_bounds(self, payload)
        return super().preprocess(payload)


def label_of(cls, name: str) -> str:
    meta = field_info(cls, name).metadata
    label = meta["label"] or name.replace("_", " ")
    if meta["off"] is not None:
        label += f" ({meta['off']:g}: off)"
    return label


def field_component(cls, name: str, value: Any = None, *, radio: bool = False, help: bool = True, **overrides):
    """The component for one config field: a checkbox, a choice, a slider over its range, a number
    box (whole numbers for int fields) or a text box. `overrides` take precedence over the field's
    own range (`minimum`, `maximum`, `step`) and any component argument."""
    f = field_info(cls, name)
    meta = f.metadata
    if value is None:
        value = meta["off"] if f.default is None and meta["off"] is not None else f.default
    common = dict(label=label_of(cls, name), info=meta["help"] if help else None)
    low, high = meta["range"] or (None, None)
    minimum, maximum = overrides.pop("minimum", low), overrides.pop("maximum", high)
    step = overrides.pop("step", meta["step"])
    common.update(overrides)
    if f.type == "bool":
        return gr.Checkbox(value=value, **common)
    if meta["choices"]:
        return (gr.Radio if radio else gr.Dropdown)(list(meta["choices"]), value=value, **common)
    if minimum is not None and maximum is not None:
        return Slider(minimum, maximum, value=value, step=step, **common)
    if f.type.startswith("tuple"):  # a list of texts, typed as one, separated by "|"
        text = "|".join(value) if isinstance(value, (tuple, list)) else (value or "")
        return gr.Textbox(value=text, **{**common, "label": common["label"] + " (separate with |)"})
    if f.type == "str":
        return gr.Textbox(value=value, **common)
    # No precision=0 for whole numbers: Gradio would round 1.5 to 2 (and fail on inf) before the
    # config could name the field; the bounds let Gradio refuse what the config would refuse anyway.
    low, high = meta.get("bounds") or (None, None)
    number = {"minimum": 0 if meta["off"] is not None else low, "maximum": high}
    return Number(value=value, **number, **common)


def field_components(cls, names, values: dict[str, Any] | None = None, **overrides) -> dict[str, Any]:
    """One component per name, laid out two to a row, keyed by field name."""
    values = values or {}
    out = {}
    for pair in (names[i:i + 2] for i in range(0, len(names), 2)):
        with gr.Row():
            for name in pair:
                out[name] = field_component(cls, name, values.get(name), **overrides.get(name, {}))
    return out
