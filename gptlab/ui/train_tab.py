"""The Train tab: settings from a preset, Start / Stop / Resume, and the live view of a run."""

from __future__ import annotations

from dataclasses import dataclass, replace

import gradio as gr

from gptlab.config import DEFAULT_PRESET, MAX_STEPS, MODEL_FORM, PRESETS, TRAIN_FORM, ModelConfig, TrainConfig
from gptlab.service import START_FROM, X_AXES, Lab
from gptlab.views import LiveView
from gptlab.ui.common import Session, user_errors
from gptlab.ui.data_tab import DataTab
from gptlab.ui.forms import field_components

GROUPS = (("Model", ModelConfig, MODEL_FORM), ("Optimisation", TrainConfig, TRAIN_FORM[:10]),
          ("Duration, evaluation and precision", TrainConfig, TRAIN_FORM[10:]))
LIVE = dict(concurrency_limit=None, show_progress="hidden")  # observers: they wait on the run, not the CPU


@dataclass(frozen=True)
class TrainTab:
    preset: gr.Dropdown
    start_from: gr.Radio
    size: gr.Markdown
    fields: dict  # field name -> component, for every setting in MODEL_FORM and TRAIN_FORM
    start: gr.Button
    stop: gr.Button
    resume: gr.Button
    runs: gr.Dropdown
    status: gr.Markdown
    progress: gr.Slider
    loss_plot: gr.Plot
    log_scale: gr.Checkbox
    x_axis: gr.Radio
    dynamics_plot: gr.Plot
    sample: gr.Textbox
    prepare_downloads: gr.Button
    downloads: gr.File
    time_machine: gr.Slider | None = None  # the time machine's step slider, whose range follows the run

    def live_outputs(self, session: Session) -> list:
        return [session.owner, session.run_id, self.status, self.progress, self.loss_plot, self.dynamics_plot,
                self.sample, self.runs] + ([self.time_machine] if self.time_machine is not None else [])

    def show(self, session: Session, view: LiveView) -> dict:
        """A live view as component updates; what did not change is left out, so it is not redrawn."""
        out = {session.owner: view.owner, session.run_id: view.run_id, self.status: view.status,
               self.progress: view.progress, self.sample: view.sample}
        if view.loss is not None:
            out[self.loss_plot] = view.loss
        if view.dynamics is not None:
            out[self.dynamics_plot] = view.dynamics
        if view.runs is not None:
            out[self.runs] = gr.update(choices=view.runs, value=view.run_id)
        if view.snapshot_step is not None and self.time_machine is not None:
            out[self.time_machine] = gr.update(maximum=max(1, view.snapshot_step))
        return out


def _settings_column(preset: str) -> tuple[gr.Dropdown, gr.Radio, gr.Markdown, dict]:
    values = Lab.preset_settings(preset)
    choice = gr.Dropdown(list(PRESETS), value=preset, label="Preset",
                         info="named settings; every value below can be changed")
    start_from = gr.Radio(START_FROM, value=START_FROM[0], label="Start from")
    size = gr.Markdown(elem_id="size")
    fields = {}
    for title, cls, names in GROUPS:
        with gr.Accordion(title, open=False):
            fields.update(field_components(cls, names, values))
    return choice, start_from, size, fields


def _layout() -> TrainTab:
    with gr.Row():
        with gr.Column(scale=2, min_width=360):
            preset, start_from, size, fields = _settings_column(DEFAULT_PRESET)
            with gr.Row():
                start = gr.Button("Start", variant="primary", elem_id="start", min_width=100)
                stop = gr.Button("Stop", variant="stop", elem_id="stop", min_width=100)
                resume = gr.Button("Resume", elem_id="resume", min_width=100)
            with gr.Row():
                runs = gr.Dropdown([], label="your runs", elem_id="runs", allow_custom_value=True)
            prepare = gr.Button("Prepare downloads")
            downloads = gr.File(label="best checkpoint (.zip) and metrics", file_count="multiple")
        with gr.Column(scale=3):
            status = gr.Markdown(elem_id="status")
            progress = gr.Slider(0, 100, value=0, label="progress (%)", interactive=False, buttons=[],
                                 elem_id="progress")
            loss_plot = gr.Plot(label="loss", elem_id="loss-plot", show_label=False)
            with gr.Row():
                log_scale = gr.Checkbox(False, label="log-scale loss")
                x_axis = gr.Radio(list(X_AXES), value=X_AXES[0], label="x axis", show_label=False)
            dynamics = gr.Plot(label="learning rate, gradient norm, speed", elem_id="dyn-plot", show_label=False)
            sample = gr.Textbox(lines=6, label="latest sample", interactive=False, elem_id="sample")
    return TrainTab(preset, start_from, size, fields, start, stop, resume, runs, status, progress, loss_plot,
                    log_scale, x_axis, dynamics, sample, prepare, downloads)


def build(lab: Lab, session: Session, data: DataTab) -> tuple[TrainTab, list]:
    """The tab and its wiring; also returns the events after which every run picker is refreshed."""
    tab = replace(_layout(), time_machine=_time_machine_panel(lab, session))
    live = tab.live_outputs(session)
    settings = tab.fields

    def use_preset(preset):
        values = Lab.preset_settings(preset)
        return {**{component: values[name] for name, component in settings.items()},
                data.tokenizer: values["tokenizer"]}

    tab.preset.change(use_preset, inputs_kwargs={"preset": tab.preset}, outputs=[*settings.values(), data.tokenizer],
                      api_visibility="private")

    @user_errors
    def train(owner, source, files, pasted, tokenizer, start_from, **settings):
        for view in lab.start(owner=owner, source=source, files=files, pasted=pasted, tokenizer=tokenizer,
                              start_from=start_from, settings=settings):
            yield tab.show(session, view)

    train_inputs = {"owner": session.owner, "source": data.source, "files": data.files, "pasted": data.pasted,
                    "tokenizer": data.tokenizer, "start_from": tab.start_from, **settings}
    started = tab.start.click(train, inputs_kwargs=train_inputs, outputs=live, api_name="train", **LIVE)

    @user_errors
    def stop(owner, run_id):
        return {tab.status: lab.stop(owner=owner, run_id=run_id)}

    # Stop skips the queue: a queue full of other requests must never keep a run from being stopped.
    tab.stop.click(stop, inputs_kwargs={"owner": session.owner, "run_id": session.run_id}, outputs=[tab.status],
                   api_name="stop", queue=False)

    @user_errors
    def resume(owner, run_id, max_steps, max_time):
        for view in lab.resume(owner=owner, run_id=run_id, max_steps=max_steps, max_time=max_time):
            yield tab.show(session, view)

    resumed = tab.resume.click(resume, inputs_kwargs={"owner": session.owner, "run_id": session.run_id,
                                                      "max_steps": settings["max_steps"],
                                                      "max_time": settings["max_time"]},
                               outputs=live, api_name="resume", **LIVE)

    watched = tab.runs.input(_watcher(lab, session, tab), inputs_kwargs={"owner": session.owner, "run_id": tab.runs}, outputs=live,
                             api_name="watch", **LIVE)

    @user_errors
    def redraw_loss(owner, run_id, log_scale, x_axis):
        return {tab.loss_plot: lab.loss_view(owner=owner, run_id=run_id, log_scale=log_scale, x_axis=x_axis)}

    for toggle in (tab.log_scale, tab.x_axis):
        toggle.change(redraw_loss, inputs_kwargs={"owner": session.owner, "run_id": session.run_id,
                                                  "log_scale": tab.log_scale, "x_axis": tab.x_axis},
                      outputs=[tab.loss_plot], api_visibility="private")

    @user_errors
    def downloads(owner, run_id):
        return {tab.downloads: [str(p) for p in lab.downloads(owner=owner, run_id=run_id)]}

    tab.prepare_downloads.click(downloads, inputs_kwargs={"owner": session.owner, "run_id": session.run_id},
                                outputs=[tab.downloads], api_name="downloads")

    return tab, [started, resumed, watched]


def _time_machine_panel(lab: Lab, session: Session) -> gr.Slider:
    """What the model wrote at each evaluation, from the same prompts: drag from step 0 (gibberish) on."""
    with gr.Accordion("Time machine: from gibberish to words", open=True):
        gr.Markdown("At every evaluation the run continues the same two prompts (its usual start, and a line "
                    "of the validation text it never trains on). Drag the slider to any step and watch the "
                    "text turn into words as the validation loss falls.")
        with gr.Row():
            # The live view narrows the range to the run's last snapshot; an API caller, whose session
            # never got that update, may ask for any step (the nearest evaluation is shown).
            step = gr.Slider(0, MAX_STEPS, value=0, step=1, label="step", elem_id="tm-step")
            show = gr.Button("Show this step", elem_id="tm-show", scale=0, min_width=160)
        view = gr.HTML(elem_id="tm-view")

    @user_errors
    def time_machine(owner, run_id, step):
        return {view: lab.time_machine(owner=owner, run_id=run_id, step=step).html}

    inputs = {"owner": session.owner, "run_id": session.run_id, "step": step}
    show.click(time_machine, inputs_kwargs=inputs, outputs=[view], api_name="time_machine")
    step.release(time_machine, inputs_kwargs=inputs, outputs=[view], api_visibility="private")
    return step


def _watcher(lab: Lab, session: Session, tab: TrainTab):
    @user_errors
    def watch(owner, run_id=None):
        for view in lab.attach(owner=owner, run_id=run_id):
            yield tab.show(session, view)
    return watch


def attach_on_load(demo: gr.Blocks, lab: Lab, session: Session, tab: TrainTab):
    """On page load: the browser gets its owner token, and its latest run is re-attached."""
    return demo.load(_watcher(lab, session, tab), inputs_kwargs={"owner": session.owner},
                     outputs=tab.live_outputs(session), api_visibility="private", **LIVE)


def wire_size_summary(lab: Lab, tab: TrainTab, data: DataTab) -> dict:
    """The size line follows every setting; returns its event arguments for demo.load."""
    @user_errors
    def size_summary(tokenizer, vocab_size, **settings):
        return {tab.size: lab.size_summary(tokenizer=tokenizer, vocab_size=vocab_size, settings=settings)}

    event = dict(fn=size_summary, inputs_kwargs={"tokenizer": data.tokenizer, "vocab_size": data.vocab,
                                                 **tab.fields},
                 outputs=[tab.size], api_visibility="private")
    gr.on([c.change for c in (*tab.fields.values(), data.tokenizer, data.vocab)], **event)
    return event
