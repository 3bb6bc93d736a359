"""The Compare tab: untrained against trained, a temperature sweep, run against run, and step against step."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from gptlab.service import Lab
from gptlab.ui.common import Session, user_errors

# Generation requests skip Gradio's own waiting line: gptlab.admission decides at once who runs, who
# waits (a few, briefly) and who is refused, so a flood of them never fills the queue for everyone.
# Minimal progress: a refused request ("a character the model never saw") marks its output with
# Gradio's error badge without covering it, so the last text stays readable beside the message.
GENERATION = dict(concurrency_limit=None, show_progress="minimal")


@dataclass(frozen=True)
class CompareTab:
    prompt: gr.Textbox
    seed: gr.Number
    temperature: gr.Slider
    max_new_tokens: gr.Slider
    run_a: gr.Dropdown
    run_b: gr.Dropdown


def _prompt_row():
    with gr.Row():
        prompt = gr.Textbox(value="", label="prompt", elem_id="cmp-prompt")
        seed = gr.Number(value=1, label="seed")
        temperature = gr.Slider(0.1, 2.0, value=0.8, step=0.05, label="temperature")
        max_new_tokens = gr.Slider(10, 500, value=200, step=10, label="new tokens")
    return prompt, seed, temperature, max_new_tokens


def _untrained_vs_trained(lab: Lab, session: Session, common: dict, temperature) -> None:
    button = gr.Button("Untrained vs trained", variant="primary", elem_id="compare")
    with gr.Row():
        untrained = gr.Textbox(lines=8, label="untrained (the run's step-0 weights)", elem_id="untrained")
        trained = gr.Textbox(lines=8, label="trained (best checkpoint)", elem_id="trained")

    @user_errors
    def compare(owner, run_id, prompt, seed, temperature, max_new_tokens):
        result = lab.compare(owner=owner, run_id=run_id, prompt=prompt, seed=seed, temperature=temperature,
                             max_new_tokens=max_new_tokens)
        return {untrained: result.untrained, trained: result.trained}

    inputs = {"owner": session.owner, "run_id": session.run_id, "prompt": common["prompt"], "seed": common["seed"],
              "temperature": temperature, "max_new_tokens": common["max_new_tokens"]}
    button.click(compare, inputs_kwargs=inputs, outputs=[untrained, trained], api_name="compare", **GENERATION)


def _temperature_sweep(lab: Lab, session: Session, common: dict) -> None:
    button = gr.Button("Temperature sweep")
    table = gr.Dataframe(headers=["temperature", "text"], interactive=False, wrap=True)

    @user_errors
    def sweep(owner, run_id, prompt, seed, max_new_tokens):
        rows = lab.sweep(owner=owner, run_id=run_id, prompt=prompt, seed=seed, max_new_tokens=max_new_tokens)
        return {table: [[row.temperature, row.text] for row in rows]}

    button.click(sweep, inputs_kwargs={"owner": session.owner, "run_id": session.run_id, **common},
                 outputs=[table], api_name="sweep", **GENERATION)


def _run_against_run(lab: Lab, session: Session, common: dict) -> tuple[gr.Dropdown, gr.Dropdown]:
    gr.Markdown("### Run against run")
    with gr.Row():
        run_a = gr.Dropdown([], label="run A", allow_custom_value=True)
        run_b = gr.Dropdown([], label="run B", allow_custom_value=True)
    button = gr.Button("Compare runs")
    plot = gr.Plot(show_label=False)
    with gr.Row():
        text_a = gr.Textbox(lines=6, label="run A sample")
        text_b = gr.Textbox(lines=6, label="run B sample")

    @user_errors
    def compare_runs(owner, run_a, run_b, prompt, seed, max_new_tokens):
        result = lab.compare_runs(owner=owner, run_a=run_a, run_b=run_b, prompt=prompt, seed=seed,
                                  max_new_tokens=max_new_tokens)
        return {plot: result.figure, text_a: result.text_a, text_b: result.text_b}

    button.click(compare_runs, inputs_kwargs={"owner": session.owner, "run_a": run_a, "run_b": run_b, **common},
                 outputs=[plot, text_a, text_b], api_name="compare_runs", **GENERATION)
    return run_a, run_b


def _surprise_map(lab: Lab, session: Session) -> None:
    gr.Markdown("### Surprise map: how many bits each token of a held-out passage cost the model")
    passage = gr.Textbox(lines=3, label="passage", elem_id="surprise-passage",
                         placeholder="Empty: the start of the run's validation text (text it never trained on)",
                         info="Scored up to the model's context length plus one token; a longer passage is cut.")
    button = gr.Button("Surprise map", elem_id="surprise-button")
    note = gr.Markdown(elem_id="surprise-note")
    legend = gr.HTML()
    with gr.Row():
        untrained = gr.HTML(elem_id="surprise-untrained")
        trained = gr.HTML(elem_id="surprise-trained")

    @user_errors
    def surprise(owner, run_id, passage):
        view = lab.surprise(owner=owner, run_id=run_id, passage=passage)
        return {untrained: view.untrained_html, trained: view.trained_html, legend: view.legend, note: view.note}

    button.click(surprise, inputs_kwargs={"owner": session.owner, "run_id": session.run_id, "passage": passage},
                 outputs=[untrained, trained, legend, note], api_name="surprise", **GENERATION)
def _step_against_step(lab: Lab, session: Session) -> None:
    """Two evaluations of the current run side by side, from its time machine (no model runs)."""
    gr.Markdown("### Step against step")
    load = gr.Button("Load the run's timeline", elem_id="steps-load")
    with gr.Row():
        step_a = gr.Dropdown([], label="step A", allow_custom_value=True, elem_id="step-a")
        step_b = gr.Dropdown([], label="step B", allow_custom_value=True, elem_id="step-b")
    button = gr.Button("Compare steps", elem_id="steps-compare")
    with gr.Row():
        view_a = gr.HTML(elem_id="step-a-view")
        view_b = gr.HTML(elem_id="step-b-view")
    with gr.Accordion("the timeline as data", open=False):
        data = gr.JSON(elem_id="timeline-data", show_label=False)
    run = {"owner": session.owner, "run_id": session.run_id}

    @user_errors
    def timeline(owner, run_id):
        result = lab.timeline(owner=owner, run_id=run_id)
        choices = [(f"{s:,}", s) for s in result.steps]
        return {data: {"steps": result.steps, "snapshots": result.snapshots, "message": result.message},
                step_a: gr.update(choices=choices, value=result.steps[0] if result.steps else None),
                step_b: gr.update(choices=choices, value=result.steps[-1] if result.steps else None)}

    load.click(timeline, inputs_kwargs=run, outputs=[data, step_a, step_b], api_name="timeline")

    @user_errors
    def compare_steps(owner, run_id, step_a, step_b):
        result = lab.compare_steps(owner=owner, run_id=run_id, step_a=step_a, step_b=step_b)
        return {view_a: result.html_a, view_b: result.html_b}

    button.click(compare_steps, inputs_kwargs={**run, "step_a": step_a, "step_b": step_b}, outputs=[view_a, view_b],
                 api_name="compare_steps")


def build(lab: Lab, session: Session) -> CompareTab:
    prompt, seed, temperature, max_new_tokens = _prompt_row()
    common = {"prompt": prompt, "seed": seed, "max_new_tokens": max_new_tokens}
    _untrained_vs_trained(lab, session, common, temperature)
    _temperature_sweep(lab, session, common)
    run_a, run_b = _run_against_run(lab, session, common)
    _surprise_map(lab, session)
    _step_against_step(lab, session)
    return CompareTab(prompt, seed, temperature, max_new_tokens, run_a, run_b)
