"""The Train tab: settings from a preset, Start / Stop / Resume, and the live view of a run."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import gradio as gr

from gptlab.config import (DEFAULT_PRESET, MAX_STEPS, MODEL_FORM, PRESETS, TRAIN_FORM, ModelConfig, TrainConfig,
                           field_info)
from gptlab.insight.doctor import FIX_SETTINGS, KINDS
from gptlab.insight.dynamics_plots import doctor_markdown
from gptlab.service import START_FROM, X_AXES, Lab
from gptlab.service.dynamics import SCHEDULE_SETTINGS
from gptlab.views import LiveView
from gptlab.ui.common import Session, agent_tool, user_errors
from gptlab.ui.data_tab import DataTab
from gptlab.ui.forms import field_components

# The optimiser's choice came last to the API (TRAIN_FORM's end) but belongs with the optimisation settings.
GROUPS = (("Model", ModelConfig, MODEL_FORM), ("Optimisation", TrainConfig, TRAIN_FORM[:10] + TRAIN_FORM[-2:]),
          ("Duration, evaluation and precision", TrainConfig, TRAIN_FORM[10:-2]))
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
    prepare_gguf: gr.Button
    gguf: gr.File
    doctor: gr.Markdown | None = None  # the loss doctor's reading (see _doctor_panel)
    fixes: dict = field(default_factory=dict)  # diagnosis kind -> its "fill the settings" button
    time_machine: gr.Slider | None = None  # the time machine's step slider, whose range follows the run
    processes: gr.Number | None = None  # GPUs to train on: shown only where there are several

    def live_outputs(self, session: Session) -> list:
        return [session.owner, session.run_id, self.status, self.progress, self.loss_plot, self.dynamics_plot,
                self.sample, self.runs, *([self.doctor] if self.doctor else []), *self.fixes.values(),
                *([self.time_machine] if self.time_machine is not None else [])]

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
        if view.doctor is not None and self.doctor is not None:
            out.update(self.show_doctor(view.doctor))
        return out

    def show_doctor(self, doctor) -> dict:
        out = {self.doctor: doctor.markdown}
        for kind, button in self.fixes.items():
            label = doctor.fixes.get(kind)
            out[button] = (gr.update(visible=True, value=f"Fill the settings: {label} (starts nothing)") if label
                           else gr.update(visible=False))
        return out


def _settings_column(preset: str, choices: tuple[str, ...]) -> tuple[gr.Dropdown, gr.Radio, gr.Markdown, dict]:
    values = Lab.preset_settings(preset)
    # A preset the hardware leaves out (a CPU Space offers no GPU preset) still arrives from a shared link,
    # a settings file or the API: it is allowed, not offered.
    choice = gr.Dropdown(list(choices), value=preset, label="Preset", allow_custom_value=set(choices) != set(PRESETS),
                         info="named settings; every value below can be changed")
    start_from = gr.Radio(START_FROM, value=START_FROM[0], label="Start from")
    size = gr.Markdown(elem_id="size")
    fields = {}
    for title, cls, names in GROUPS:
        with gr.Accordion(title, open=False):
            fields.update(field_components(cls, names, values))
    # The endpoints take the settings in MODEL_FORM + TRAIN_FORM's order, whatever the accordions show.
    return choice, start_from, size, {name: fields[name] for name in MODEL_FORM + TRAIN_FORM}


def _layout(preset: str, choices: tuple[str, ...], most_processes: int = 1) -> TrainTab:
    with gr.Row():
        with gr.Column(scale=2, min_width=360):
            preset, start_from, size, fields = _settings_column(preset, choices)
            with gr.Row():
                start = gr.Button("Start", variant="primary", elem_id="start", min_width=100)
                stop = gr.Button("Stop", variant="stop", elem_id="stop", min_width=100)
                resume = gr.Button("Resume", elem_id="resume", min_width=100)
            processes = gr.Number(1, precision=0, minimum=1, maximum=most_processes, label="GPUs",
                                  info=f"train on up to {most_processes} GPUs at once (a torchrun job, one process each)",
                                  visible=most_processes > 1, elem_id="processes")
            with gr.Row():
                runs = gr.Dropdown([], label="your runs", elem_id="runs", allow_custom_value=True)
            prepare = gr.Button("Prepare downloads")
            downloads = gr.File(label="best checkpoint (.zip), metrics and the run report", file_count="multiple")
            prepare_gguf = gr.Button("GGUF for llama.cpp / Ollama")
            gguf = gr.File(label="best checkpoint as GGUF (f16) and its Ollama Modelfile", file_count="multiple")
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
                    log_scale, x_axis, dynamics, sample, prepare, downloads, prepare_gguf, gguf, processes=processes)


def build(lab: Lab, session: Session, data: DataTab, preset: str = DEFAULT_PRESET,
          choices: tuple[str, ...] = tuple(PRESETS)) -> tuple[TrainTab, list]:
    """The tab and its wiring, starting from `preset` and offering `choices` (the presets that fit the
    hardware); also returns the events after which every run picker is refreshed."""
    tab = replace(_layout(preset, choices, lab.max_processes()), time_machine=_time_machine_panel(lab, session))
    with gr.Row():
        with gr.Column(scale=2, min_width=360):
            _lr_preview_panel(lab, tab, preset)
        with gr.Column(scale=3):
            tab = replace(tab, **_doctor_panel(lab, session, tab))
    live = tab.live_outputs(session)
    settings = tab.fields

    @user_errors
    def use_preset(preset):
        values = Lab.preset_settings(preset)
        return {**{component: values[name] for name, component in settings.items()},
                data.tokenizer: values["tokenizer"]}

    tab.preset.input(use_preset, inputs_kwargs={"preset": tab.preset}, outputs=[*settings.values(), data.tokenizer],
                      api_visibility="private")

    @user_errors
    def train(owner, source, files, pasted, tokenizer, start_from, processes=1, **settings):
        for view in lab.start(owner=owner, source=source, files=files, pasted=pasted, tokenizer=tokenizer,
                              start_from=start_from, settings=settings, processes=processes):
            yield tab.show(session, view)

    train_inputs = {"owner": session.owner, "source": data.source, "files": data.files, "pasted": data.pasted,
                    "tokenizer": data.tokenizer, "start_from": tab.start_from, **settings, "processes": tab.processes}
    started = tab.start.click(train, inputs_kwargs=train_inputs, outputs=live, api_name="train", **LIVE)

    @agent_tool
    @user_errors
    def stop(owner, run_id):
        """Stop one of your training runs after its current step; it keeps its last checkpoint and can be resumed.

        Args:
            {owner}
            run_id: the run to stop (from start_training or list_runs).
        Returns:
            A sentence: stopping, or that the run is not training.
        """
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

    @user_errors
    def gguf_download(owner, run_id):
        return {tab.gguf: [str(p) for p in lab.gguf_download(owner=owner, run_id=run_id)]}

    tab.prepare_gguf.click(gguf_download, inputs_kwargs={"owner": session.owner, "run_id": session.run_id},
                           outputs=[tab.gguf], api_name="gguf_download")

    return tab, [started, resumed, watched]


def _lr_preview_panel(lab: Lab, tab: TrainTab, preset: str) -> None:
    """The learning rate each step will use, from the trainer's own schedule, following the settings."""
    first = lab.lr_preview(settings=Lab.preset_settings(preset))
    plot = gr.Plot(first.figure, label="learning-rate schedule", show_label=False, elem_id="lr-plot")
    text = gr.Markdown(first.text, elem_id="lr-text")
    with gr.Accordion("the schedule's values", open=False):
        values = gr.JSON(first.data(), show_label=False, elem_id="lr-values")

    @user_errors
    def lr_schedule(**settings):
        preview = lab.lr_preview(settings=settings)
        return {plot: preview.figure, text: preview.text, values: preview.data()}

    inputs = {name: tab.fields[name] for name in SCHEDULE_SETTINGS}
    gr.on([c.change for c in inputs.values()], lr_schedule, inputs_kwargs=inputs, outputs=[plot, text, values],
          api_name="lr_schedule", show_progress="hidden")


def _doctor_panel(lab: Lab, session: Session, tab: TrainTab) -> dict:
    """The loss doctor: read live with the dynamics figure; each fix fills the settings for a new run."""
    doctor = gr.Markdown(doctor_markdown([]), elem_id="doctor")
    with gr.Row():
        fixes = {kind: gr.Button(kind, visible=False, size="sm", elem_id=f"fix-{kind}")
                 for kind in KINDS if kind != "healthy"}
    read = gr.Button("Read the curves now", size="sm", elem_id="doctor-read")
    with gr.Accordion("the diagnoses as data", open=False):
        data = gr.JSON(show_label=False, elem_id="doctor-data")
    panel = replace(tab, doctor=doctor, fixes=fixes)
    run = {"owner": session.owner, "run_id": session.run_id}

    @user_errors
    def loss_doctor(owner, run_id):
        report = lab.loss_doctor(owner=owner, run_id=run_id)
        return {**panel.show_doctor(report.view), data: report.data()}

    read.click(loss_doctor, inputs_kwargs=run, outputs=[doctor, data, *fixes.values()], api_name="loss_doctor")

    def filler(kind):
        @user_errors
        def fill_settings(owner, run_id):
            fix = lab.doctor_fix(owner=owner, run_id=run_id, kind=kind)
            gr.Info("Settings filled in; press Start to train a new run with them.")
            return {tab.fields[name]: value for name, value in fix.items()}
        return fill_settings

    for kind, button in fixes.items():
        button.click(filler(kind), inputs_kwargs=run, outputs=[tab.fields[name] for name in FIX_SETTINGS],
                     api_visibility="private")
    return {"doctor": doctor, "fixes": fixes}


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


def build_sharing(lab: Lab, session: Session, tab: TrainTab, data: DataTab) -> dict:
    """Reproduce and share: the settings as a command, a file and a link; a link's settings are
    restored on page load. Returns the restore event's arguments for demo.load."""
    with gr.Accordion("Reproduce and share these settings", open=False):
        with gr.Row():
            command_button = gr.Button("Copy as command", elem_id="copy-command", min_width=120)
            link_button = gr.Button("Share link", elem_id="share-link", min_width=120)
            save_button = gr.Button("Save settings", min_width=120)
            load = gr.UploadButton("Load settings", file_types=[".json"], type="filepath", elem_id="load-settings")
        command = gr.Textbox(label="command", buttons=["copy"], interactive=False, elem_id="command")
        saved = gr.File(label="settings file", visible=False)
    values = {"preset": tab.preset, "tokenizer": data.tokenizer, **tab.fields}
    filled = [tab.preset, data.tokenizer, *tab.fields.values()]

    @user_errors
    def as_command(preset, tokenizer, source, files, **settings):
        return {command: lab.command(preset=preset, tokenizer=tokenizer, settings=settings, source=source, files=files)}

    command_button.click(as_command, inputs_kwargs={**values, "source": data.source, "files": data.files},
                         outputs=[command], api_name="command")

    @user_errors
    def as_link(preset, tokenizer, **settings):
        return {command: "?" + lab.settings_link(preset=preset, tokenizer=tokenizer, settings=settings)}

    link_button.click(as_link, inputs_kwargs=values, outputs=[command], api_name="settings_link")

    @user_errors
    def save(owner, preset, tokenizer, **settings):
        path = lab.save_settings(owner=owner, preset=preset, tokenizer=tokenizer, settings=settings)
        return {saved: gr.update(value=str(path), visible=True)}

    save_button.click(save, inputs_kwargs={"owner": session.owner, **values}, outputs=[saved], api_name="save_settings")

    def fill(found: dict | None) -> dict:
        if found is None:  # an empty dict would read as one value: leave one component as it is
            return {tab.preset: gr.update()}
        # The preset's own event fires on a user's choice only (.input), so setting it here keeps the rest.
        out = {tab.preset: found["preset"], data.tokenizer: found["tokenizer"]}
        for name, component in tab.fields.items():
            value = found[name]
            out[component] = field_off(name) if value is None else value
        return out

    @user_errors
    def load_file(upload):
        return fill(lab.load_settings(upload=upload))

    load.upload(load_file, inputs_kwargs={"upload": load}, outputs=filled, api_name="load_settings")

    @user_errors
    def restore(request: gr.Request):
        return fill(lab.settings_from_link(query=dict(request.query_params) if request else {}))

    return dict(fn=restore, inputs_kwargs={}, outputs=filled, api_visibility="private")


def field_off(name: str):
    """The form value that means "off" for a setting whose value is None."""
    return field_info(ModelConfig if name in MODEL_FORM else TrainConfig, name).metadata["off"]
