"""The Experiments tab: the browser's run history, runs overlaid, and sweeps (with the exercises,
seeds and the scaling lab), each a small builder."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from gptlab.experiments.compare import X_AXES
from gptlab.experiments.history import HEADERS
from gptlab.experiments.sweep import RESULT_HEADERS, SWEEPABLE
from gptlab.service import Lab
from gptlab.service.experiments import BUDGETS, EXERCISES, SCALING_SIZES, SweepView
from gptlab.ui.common import Session, user_errors
from gptlab.ui.data_tab import DataTab
from gptlab.ui.train_tab import LIVE  # a sweep's view observes its queue as a run's observes the run

PREVIOUS = "the run before it"


@dataclass(frozen=True)
class ExperimentsTab:
    history: gr.Dataframe
    run: gr.Dropdown
    against: gr.Dropdown
    overlay_runs: gr.Dropdown
    sweep_id: gr.Textbox
    sweeps: gr.Dropdown
    sweep_outputs: list  # what a SweepView fills
    show_history: dict  # the event arguments that redraw the history table

    def pickers(self, choices: list[tuple[str, str]]) -> dict:
        return {self.run: gr.update(choices=choices), self.against: gr.update(choices=[(PREVIOUS, "")] + choices),
                self.overlay_runs: gr.update(choices=choices)}


def _history_panel(lab: Lab, session: Session, overlay_runs: gr.Dropdown):
    gr.Markdown("### Your runs\nEvery run of this browser with the settings it was started with; **changes** "
                "lists what each changed from the run before it, or from the run you pick.")
    with gr.Row():
        against = gr.Dropdown([(PREVIOUS, "")], value="", label="changes against", elem_id="runs-against")
        refresh = gr.Button("Refresh", elem_id="runs-refresh", min_width=100)
    table = gr.Dataframe(headers=list(HEADERS), interactive=False, wrap=True, elem_id="runs-history")
    with gr.Row():
        run = gr.Dropdown([], label="run", allow_custom_value=True, elem_id="runs-pick")
        name = gr.Textbox(label="new name", max_length=80, elem_id="runs-name")
        rename = gr.Button("Rename", min_width=90)
        delete = gr.Button("Delete run", variant="stop", min_width=90, elem_id="runs-delete")
    message = gr.Markdown()

    @user_errors
    def show(owner, against):
        result = lab.runs_table(owner=owner, against=against or None)
        return {table: result.rows, run: gr.update(choices=result.choices),
                overlay_runs: gr.update(choices=result.choices)}

    shown = dict(fn=show, inputs_kwargs={"owner": session.owner, "against": against},
                 outputs=[table, run, overlay_runs])
    refresh.click(**shown, api_name="runs_history")
    against.change(**shown, api_visibility="private")

    @user_errors
    def do_rename(owner, run_id, name):
        return {message: lab.rename_run(owner=owner, run_id=run_id, name=name)}

    @user_errors
    def do_delete(owner, run_id):
        return {message: lab.delete_run(owner=owner, run_id=run_id)}

    for button, fn, inputs, api in ((rename, do_rename, {"name": name}, "rename_run"), (delete, do_delete, {}, "delete_run")):
        button.click(fn, inputs_kwargs={"owner": session.owner, "run_id": run, **inputs}, outputs=[message],
                     api_name=api).success(**shown, api_visibility="private")
    return table, run, against, refresh, shown


def _overlay_panel(lab: Lab, session: Session, runs: gr.Dropdown) -> None:
    gr.Markdown("### Overlay\nUp to 8 runs on one chart, whole runs, with their latest samples side by side.")
    with gr.Row():
        runs.render()
        x_axis = gr.Radio(list(X_AXES), value=X_AXES[0], label="x axis")
        smoothing = gr.Slider(0, 0.99, value=0.6, step=0.01, label="smoothing (EMA of the training loss)")
    button = gr.Button("Overlay", elem_id="overlay")
    plot = gr.Plot(show_label=False, elem_id="overlay-plot")
    samples = gr.Dataframe(headers=["run", "latest sample"], interactive=False, wrap=True)

    @user_errors
    def overlay(owner, run_ids, x_axis, smoothing):
        result = lab.overlay(owner=owner, run_ids=run_ids, x_axis=x_axis, smoothing=smoothing)
        return {plot: result.figure, samples: result.samples}

    button.click(overlay, inputs_kwargs={"owner": session.owner, "run_ids": runs, "x_axis": x_axis,
                                         "smoothing": smoothing}, outputs=[plot, samples], api_name="overlay")


def _sweep_outputs():
    status = gr.Markdown(elem_id="sweep-status")
    progress = gr.Slider(0, 100, value=0, label="runs ended (%)", interactive=False, buttons=[])
    table = gr.Dataframe(headers=list(RESULT_HEADERS), interactive=False, wrap=True, elem_id="sweep-table")
    plot = gr.Plot(show_label=False, elem_id="sweep-plot")
    scaling = gr.Markdown(elem_id="sweep-scaling")
    return status, progress, table, plot, scaling


def build(lab: Lab, session: Session, data: DataTab, preset: gr.Dropdown, fields: dict) -> ExperimentsTab:
    # Made here and placed by the overlay panel, so the history's refresh can update its choices too.
    overlay_runs = gr.Dropdown([], multiselect=True, max_choices=8, label="runs", allow_custom_value=True,
                               elem_id="overlay-runs", render=False)
    table, run, against, _, shown = _history_panel(lab, session, overlay_runs)
    _overlay_panel(lab, session, overlay_runs)

    gr.Markdown("### Sweeps\nOne click trains a run per value, one after another, with the Train tab's settings "
                "and data and the same budget for each; the runs are ordinary runs.")
    sweep_id = gr.Textbox(visible=False, elem_id="sweep-id")
    with gr.Row():
        exercise = gr.Dropdown(list(EXERCISES), value=list(EXERCISES)[0], label="exercise", elem_id="exercise")
        run_exercise = gr.Button("Run the exercise", variant="primary", elem_id="run-exercise")
    with gr.Accordion("Your own sweep, seeds and the scaling lab", open=False):
        with gr.Row():
            axis_a = gr.Dropdown(list(SWEEPABLE), value="learning_rate", label="setting")
            values_a = gr.Textbox("1e-3, 3e-3, 1e-2", label="values (2-6, commas)", elem_id="sweep-values")
            axis_b = gr.Dropdown([("none", "")] + [(s, s) for s in SWEEPABLE], value="", label="second setting (a grid)")
            values_b = gr.Textbox("", label="its values")
        with gr.Row():
            budget_kind = gr.Radio(list(BUDGETS), value=BUDGETS[0], label="budget of each run")
            budget = gr.Number(40, label="seconds or steps", minimum=1)
            start = gr.Button("Start sweep", elem_id="start-sweep")
        with gr.Row():
            seeds = gr.Number(3, label="seeds", minimum=2, maximum=5, precision=0)
            repeat = gr.Button("Repeat the Train tab's settings over seeds", elem_id="repeat-seeds")
            sizes = gr.Textbox(SCALING_SIZES, label="model sizes for the scaling lab (layers x width)")
            ladder = gr.Button("Run the scaling ladder", elem_id="scaling-ladder")
    with gr.Row():
        sweeps = gr.Dropdown([], label="sweep", allow_custom_value=True, elem_id="sweep-pick")
        cancel = gr.Button("Cancel sweep", variant="stop", min_width=100, elem_id="cancel-sweep")
        resume = gr.Button("Resume sweep", min_width=100)
    outputs = _sweep_outputs()
    tab = ExperimentsTab(table, run, against, overlay_runs, sweep_id, sweeps, [sweep_id, *outputs, sweeps], shown)
    _seed_verdict(lab, session)
    _wire_sweeps(lab, session, tab, data, preset, fields, dict(
        exercise=exercise, run_exercise=run_exercise, axis_a=axis_a, values_a=values_a, axis_b=axis_b,
        values_b=values_b, budget_kind=budget_kind, budget=budget, start=start, seeds=seeds, repeat=repeat,
        sizes=sizes, ladder=ladder, cancel=cancel, resume=resume))
    return tab


def _seed_verdict(lab: Lab, session: Session) -> None:
    with gr.Row():
        a = gr.Dropdown([], label="seed sweep A", allow_custom_value=True)
        b = gr.Dropdown([], label="seed sweep B", allow_custom_value=True)
        button = gr.Button("Does B beat A?", min_width=120)
    verdict = gr.Markdown(elem_id="seed-verdict")

    @user_errors
    def judge(owner, sweep_a, sweep_b):
        return {verdict: lab.seed_verdict(owner=owner, sweep_a=sweep_a, sweep_b=sweep_b)}

    button.click(judge, inputs_kwargs={"owner": session.owner, "sweep_a": a, "sweep_b": b}, outputs=[verdict],
                 api_name="seed_verdict")
    for picker in (a, b):
        picker.focus(lambda owner: {picker: gr.update(choices=lab.sweep_choices(owner))},
                     inputs_kwargs={"owner": session.owner}, outputs=[picker], api_visibility="private")


def _show(lab: Lab, session: Session, tab: ExperimentsTab, owner: str, view: SweepView) -> dict:
    sweep_id, status, progress, table, plot, scaling, sweeps = tab.sweep_outputs
    out = {sweep_id: view.sweep_id or "", status: view.status, progress: view.progress, table: view.table,
           scaling: view.scaling, sweeps: gr.update(choices=lab.sweep_choices(owner), value=view.sweep_id)}
    if view.figure is not None:
        out[plot] = view.figure
    return out


def _wire_sweeps(lab: Lab, session: Session, tab: ExperimentsTab, data: DataTab, preset, fields: dict, c: dict):
    common = {"owner": session.owner, "source": data.source, "files": data.files, "pasted": data.pasted,
              "tokenizer": data.tokenizer, "preset": preset, **fields}
    budget = {"budget_kind": c["budget_kind"], "budget": c["budget"]}

    def streamed(call):
        @user_errors
        def handler(owner, **kw):
            for view in call(owner=owner, **kw):
                yield _show(lab, session, tab, owner, view)
        return handler

    def start(owner, source, files, pasted, tokenizer, preset, axis_a, values_a, axis_b, values_b, budget_kind,
              budget, **settings):
        return lab.start_sweep(owner=owner, source=source, files=files, pasted=pasted, tokenizer=tokenizer,
                               preset=preset, settings=settings, axis_a=axis_a, values_a=values_a, axis_b=axis_b or None,
                               values_b=values_b, budget_kind=budget_kind, budget=budget)

    def ladder(owner, source, files, pasted, tokenizer, preset, sizes, budget_kind, budget, **settings):
        return lab.start_sweep(owner=owner, source=source, files=files, pasted=pasted, tokenizer=tokenizer,
                               preset=preset, settings=settings, axis_a="model_size", values_a=sizes,
                               budget_kind=budget_kind, budget=budget)

    def exercise(owner, source, files, pasted, tokenizer, preset, exercise, **settings):
        return lab.exercise(owner=owner, source=source, files=files, pasted=pasted, tokenizer=tokenizer,
                            preset=preset, settings=settings, exercise=exercise)

    def seeds(owner, source, files, pasted, tokenizer, preset, seeds, budget_kind, budget, **settings):
        return lab.repeat_seeds(owner=owner, source=source, files=files, pasted=pasted, tokenizer=tokenizer,
                                preset=preset, settings=settings, seeds=seeds, budget_kind=budget_kind, budget=budget)

    out = tab.sweep_outputs
    c["start"].click(streamed(start), inputs_kwargs={**common, "axis_a": c["axis_a"], "values_a": c["values_a"],
                                                     "axis_b": c["axis_b"], "values_b": c["values_b"], **budget},
                     outputs=out, api_name="sweep_start", **LIVE)
    c["ladder"].click(streamed(ladder), inputs_kwargs={**common, "sizes": c["sizes"], **budget}, outputs=out,
                      api_name="scaling_ladder", **LIVE)
    c["run_exercise"].click(streamed(exercise), inputs_kwargs={**common, "exercise": c["exercise"]}, outputs=out,
                            api_name="exercise", **LIVE)
    c["repeat"].click(streamed(seeds), inputs_kwargs={**common, "seeds": c["seeds"], **budget}, outputs=out,
                      api_name="repeat_seeds", **LIVE)
    watch = streamed(lambda owner, sweep_id: lab.watch_sweep(owner=owner, sweep_id=sweep_id))
    tab.sweeps.input(watch, inputs_kwargs={"owner": session.owner, "sweep_id": tab.sweeps}, outputs=out,
                     api_name="sweep_watch", **LIVE)
    c["resume"].click(streamed(lambda owner, sweep_id: lab.resume_sweep(owner=owner, sweep_id=sweep_id)),
                      inputs_kwargs={"owner": session.owner, "sweep_id": tab.sweep_id}, outputs=out,
                      api_name="sweep_resume", **LIVE)

    @user_errors
    def cancel(owner, sweep_id):
        return {out[1]: lab.cancel_sweep(owner=owner, sweep_id=sweep_id)}

    # Cancel skips the queue, as Stop does: a full queue must never keep a sweep from being cancelled.
    c["cancel"].click(cancel, inputs_kwargs={"owner": session.owner, "sweep_id": tab.sweep_id}, outputs=[out[1]],
                      api_name="sweep_cancel", queue=False)


def attach_on_load(demo: gr.Blocks, lab: Lab, session: Session, tab: ExperimentsTab):
    """On page load: re-attach to this browser's latest sweep, as the Train tab does to its run."""
    @user_errors
    def attach(owner):
        for view in lab.watch_sweep(owner=owner):
            yield _show(lab, session, tab, owner, view)

    return demo.load(attach, inputs_kwargs={"owner": session.owner}, outputs=tab.sweep_outputs,
                     api_visibility="private", **LIVE)
