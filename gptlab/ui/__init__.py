"""GPT Lab's web app: the tabs assembled, what crosses tabs wired, and the server launched.

This package is the only part of gptlab that imports gradio. Each tab is a module with a small
builder per panel; every handler takes named inputs, calls gptlab.service.Lab once and returns
named outputs ({component: value}).
"""

from __future__ import annotations

import gradio as gr
import matplotlib.pyplot  # noqa: F401  (imported once here: gradio's plot encoder imports it on first use, and
# several events drawing at once raced on that first import)

from gptlab.config import TrainConfig
from gptlab.service import Lab
from gptlab.space import Space, banner_markdown
from gptlab.ui import agent_tools, compare_tab, data_tab, experiments_tab, sample_tab, train_tab
from gptlab.ui.common import agent_tools_only, session

__all__ = ["build_demo", "launch", "main"]

TITLE = "# GPT Lab\nTrain a small GPT on your own text and watch it go from gibberish to words."


def build_demo(lab: Lab, space: Space = Space()) -> gr.Blocks:
    """The app; on a Space (gptlab.space.detect) it says what the Space offers and fits its hardware."""
    # Gradio keeps every upload in its cache: clear what is over an hour old, every hour.
    with gr.Blocks(title="GPT Lab", delete_cache=(3600, 3600)) as demo:
        who = session(lab.registry.root)
        gr.Markdown(TITLE)
        banner = banner_markdown(space, lab.registry.root)
        if banner:
            gr.Markdown(banner, elem_id="space-banner")
        with gr.Tab("Data"):
            data = data_tab.build(TrainConfig.preset(space.default_preset).tokenizer)
        with gr.Tab("Train"):
            train, live_events = train_tab.build(lab, who, data, space.default_preset, space.presets)
            restore = train_tab.build_sharing(lab, who, train, data)
        with gr.Tab("Compare"):
            compare = compare_tab.build(lab, who)
        with gr.Tab("Sample"):
            sample = sample_tab.build(lab, who)
        with gr.Tab("Experiments") as experiments_page:
            experiments = experiments_tab.build(lab, who, data, train.preset, train.fields)

        preview = data_tab.wire_preview(lab, data, train.fields["block_size"])
        size_summary = train_tab.wire_size_summary(lab, train, data)

        # Every run picker follows the Train tab's list of runs, and shows a run's final status.
        def sync_pickers(run_id, owner):
            choices = lab.run_choices(owner)
            return {sample.run: gr.update(choices=choices, value=run_id),
                    compare.run_a: gr.update(choices=choices, value=run_id),
                    compare.run_b: gr.update(choices=choices), **experiments.pickers(choices)}

        pickers = dict(fn=sync_pickers, inputs_kwargs={"run_id": train.runs, "owner": who.owner},
                       outputs=[sample.run, compare.run_a, compare.run_b, experiments.run, experiments.against,
                                experiments.overlay_runs], api_visibility="private")
        train.runs.change(**pickers)
        loaded = train_tab.attach_on_load(demo, lab, who, train)
        for event in (*live_events, loaded):
            event.then(**pickers)
        demo.load(**preview, api_visibility="private")
        demo.load(**size_summary)
        demo.load(**restore)
        experiments_page.select(**experiments.show_history, api_visibility="private")
        experiments_tab.attach_on_load(demo, lab, who, experiments)
        agent_tools.build(lab)  # last: the endpoints before keep their places
    agent_tools_only(demo)
    return demo


from gptlab.ui.server import launch, main  # noqa: E402  (server needs build_demo above)
