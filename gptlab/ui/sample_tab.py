"""The Sample tab: every decoding control, streamed generation, and next-token probabilities."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from gptlab.config import SAMPLE_FORM, SampleConfig
from gptlab.insight.token_views import CSS as TOKEN_CSS
from gptlab.service import CHECKPOINTS, UPLOADED, Lab
from gptlab.ui.common import Session, agent_tool, user_errors
from gptlab.ui.compare_tab import GENERATION
from gptlab.ui.forms import field_component

SAMPLING_ONLY = ("temperature", "top_k", "top_p", "min_p")  # the controls that only sampling reads


@dataclass(frozen=True)
class SampleTab:
    run: gr.Dropdown
    which: gr.Radio
    upload: gr.File
    prompt: gr.Textbox
    decoding: dict  # SAMPLE_FORM name -> component
    output: gr.Textbox
    next_table: gr.Dataframe


def _decoding_controls(max_new_tokens: int) -> tuple[dict, gr.Row]:
    """The decoding form, built from SampleConfig's fields; beam settings show only for beam search."""
    c = {"strategy": field_component(SampleConfig, "strategy", radio=True, help=False)}
    rows = (("temperature", "top_k"), ("top_p", "min_p"), ("repetition_penalty", "no_repeat_ngram_size"),
            ("max_new_tokens", "seed"))
    overrides = {"max_new_tokens": dict(minimum=1, maximum=max_new_tokens, step=1), "seed": dict(value=1)}
    for row in rows:
        with gr.Row():
            for name in row:
                kw = dict(overrides.get(name, {}))
                c[name] = field_component(SampleConfig, name, kw.pop("value", None), help=False, **kw)
    with gr.Row(visible=False) as beam_row:
        c["num_beams"] = field_component(SampleConfig, "num_beams", 4, help=False)
        c["length_penalty"] = field_component(SampleConfig, "length_penalty", help=False)
    c["stop"] = field_component(SampleConfig, "stop", help=False)
    assert set(c) == set(SAMPLE_FORM), "every decoding setting has a control"
    return {name: c[name] for name in SAMPLE_FORM}, beam_row


def _layout(max_new_tokens: int) -> tuple[SampleTab, gr.Row, gr.Button, gr.Button]:
    with gr.Row():
        with gr.Column(scale=2):
            prompt = gr.Textbox(lines=3, label="prompt", elem_id="prompt")
            with gr.Row():
                run = gr.Dropdown([], label="run", allow_custom_value=True)
                # Its choices are each browser's own runs, set per session; the API's schema (and an MCP
                # tool's) would list the empty choices it starts with as the only values allowed.
                run.api_info = lambda: {"type": "string"}
                which = gr.Radio(list(CHECKPOINTS), value=CHECKPOINTS[0], label="checkpoint")
            upload = gr.File(file_types=[".zip"], type="filepath", label="checkpoint .zip", visible=False)
            decoding, beam_row = _decoding_controls(max_new_tokens)
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="generate")
                next_button = gr.Button("Next-token probabilities")
        with gr.Column(scale=2):
            output = gr.Textbox(lines=16, label="output", elem_id="output")
            next_table = gr.Dataframe(headers=["token", "id", "probability"], interactive=False)
    return SampleTab(run, which, upload, prompt, decoding, output, next_table), beam_row, generate, next_button


def _attention_panel(lab: Lab, session: Session, tab: SampleTab) -> None:
    gr.Markdown("### Attention: which earlier tokens each token of the prompt reads")
    with gr.Row():
        layer_slider = gr.Slider(1, 12, value=1, step=1, label="layer", elem_id="attention-layer")
        head_slider = gr.Slider(1, 12, value=1, step=1, label="head", elem_id="attention-head")
        button = gr.Button("Show attention", elem_id="attention-button")
    note = gr.Markdown(elem_id="attention-note")
    plot = gr.Plot(show_label=False, elem_id="attention-plot")

    @user_errors
    def attention(owner, run_id, which, upload, prompt, layer, head):
        view = lab.attention(owner=owner, run_id=run_id, which=which, upload=upload, prompt=prompt, layer=layer,
                             head=head)
        return {plot: view.figure, note: view.note, layer_slider: gr.update(maximum=view.trained.n_layer),
                head_slider: gr.update(maximum=view.trained.n_head)}

    @user_errors
    def follow_the_model(owner, run_id, which, upload, layer, head):
        try:
            shape = lab.model_shape(owner=owner, run_id=run_id, which=which, upload=upload)
        except ValueError:  # no checkpoint chosen yet: the panel's own button explains that when pressed
            return {layer_slider: gr.update(), head_slider: gr.update()}
        return {layer_slider: gr.update(maximum=shape.n_layer, value=min(layer or 1, shape.n_layer)),
                head_slider: gr.update(maximum=shape.n_head, value=min(head or 1, shape.n_head))}

    checkpoint = {"owner": session.owner, "run_id": tab.run, "which": tab.which, "upload": tab.upload}
    gr.on([tab.run.change, tab.which.change, tab.upload.change], follow_the_model,
          inputs_kwargs={**checkpoint, "layer": layer_slider, "head": head_slider},
          outputs=[layer_slider, head_slider], api_visibility="private")
    inputs = {**checkpoint, "prompt": tab.prompt, "layer": layer_slider, "head": head_slider}
    button.click(attention, inputs_kwargs=inputs, outputs=[plot, note, layer_slider, head_slider],
                 api_name="attention", **GENERATION)


def _lens_panel(lab: Lab, session: Session, tab: SampleTab) -> None:
    gr.Markdown("### Logit lens: what each layer would predict next, read through the final norm and head\n"
                "The embeddings row reads the tokens before any block. In an untrained GPT-2 model it echoes each "
                "input token, since the output head shares its weights with the embeddings; a nanochat model's "
                "head is its own, so its untrained row is noise.")
    button = gr.Button("Logit lens", elem_id="lens-button")
    note = gr.Markdown(elem_id="lens-note")
    with gr.Row():
        untrained = gr.HTML(elem_id="lens-untrained")
        trained = gr.HTML(elem_id="lens-trained")

    @user_errors
    def logit_lens(owner, run_id, which, upload, prompt):
        view = lab.logit_lens(owner=owner, run_id=run_id, which=which, upload=upload, prompt=prompt)
        return {untrained: view.untrained_html, trained: view.trained_html, note: view.note}

    inputs = {"owner": session.owner, "run_id": tab.run, "which": tab.which, "upload": tab.upload,
              "prompt": tab.prompt}
    button.click(logit_lens, inputs_kwargs=inputs, outputs=[untrained, trained, note], api_name="logit_lens",
                 **GENERATION)


def build(lab: Lab, session: Session) -> SampleTab:
    tab, beam_row, generate, next_button = _layout(lab.limits.max_new_tokens)
    decoding = tab.decoding

    def show_strategy_controls(strategy):
        return {beam_row: gr.update(visible=strategy == "beam"),
                **{decoding[n]: gr.update(interactive=strategy == "sample") for n in SAMPLING_ONLY}}

    decoding["strategy"].change(show_strategy_controls, inputs_kwargs={"strategy": decoding["strategy"]},
                                outputs=[beam_row, *(decoding[n] for n in SAMPLING_ONLY)], api_visibility="private")
    tab.which.change(lambda which: {tab.upload: gr.update(visible=which == UPLOADED)},
                     inputs_kwargs={"which": tab.which}, outputs=[tab.upload], api_visibility="private")

    inputs = {"owner": session.owner, "run_id": tab.run, "which": tab.which, "upload": tab.upload,
              "prompt": tab.prompt, **decoding}

    @agent_tool
    @user_errors
    def sample(owner, run_id, which, upload=None, prompt=None, **decoding):
        """Generate text with one of your runs' checkpoints: the prompt, continued by the model. {decoding}

        Args:
            {owner}
            run_id: the run to sample from (from start_training or list_runs); it needs a checkpoint (one evaluation).
            which: the checkpoint: "best" (lowest validation loss), "last", or "uploaded .zip" to use upload instead.
            upload: the URL of a checkpoint .zip, only with which "uploaded .zip"; omit it otherwise.
            prompt: the text the model continues ("" to start from nothing).
        Returns:
            The prompt followed by the generated text.
        """
        noted = False
        for sample in lab.sample(owner=owner, run_id=run_id, which=which, upload=upload, prompt=prompt,
                                 decoding=decoding):
            if sample.note and not noted:
                gr.Warning(sample.note)
                noted = True
            yield {tab.output: sample.text}

    @user_errors
    def next_tokens(owner, run_id, which, upload, prompt, **decoding):
        top = lab.next_tokens(owner=owner, run_id=run_id, which=which, upload=upload, prompt=prompt,
                              decoding=decoding)
        return {tab.next_table: [[t.token, t.id, t.probability] for t in top]}

    generated = generate.click(sample, inputs_kwargs=inputs, outputs=[tab.output], api_name="sample", **GENERATION)
    next_button.click(next_tokens, inputs_kwargs=inputs, outputs=[tab.next_table], api_name="next_tokens",
                      **GENERATION)
    _decoding_insight(lab, tab, inputs)
    _attention_panel(lab, session, tab)
    _lens_panel(lab, session, tab)
    _tokens_panel(lab, session, tab, generated)
    return tab


# -- Insight: what decoding does (gptlab/service/decoding.py) -----------------------------------------


def _decoding_insight(lab: Lab, tab: SampleTab, inputs: dict) -> None:
    _next_token_chart(lab, inputs)
    _beam_view(lab, inputs)
    _memorisation_meter(lab, tab, inputs)


def _next_token_chart(lab: Lab, inputs: dict) -> None:
    with gr.Accordion("Next-token chart: the distribution through each decoding control", open=True):
        button = gr.Button("Show the next-token chart", elem_id="next-chart")
        note = gr.Markdown(elem_id="next-chart-note")
        plot = gr.Plot(show_label=False, elem_id="next-chart-plot")

    @user_errors
    def chart(owner, run_id, which, upload, prompt, **decoding):
        result = lab.next_token_stages(owner=owner, run_id=run_id, which=which, upload=upload, prompt=prompt,
                                       decoding=decoding)
        return {plot: result.figure, note: result.note}

    button.click(chart, inputs_kwargs=inputs, outputs=[plot, note], api_name="next_token_stages", **GENERATION)


def _beam_view(lab: Lab, inputs: dict) -> None:
    with gr.Accordion("Beams: every finished hypothesis of beam search, with its score", open=True):
        button = gr.Button("Show the beams (decoding: beam)", elem_id="beams")
        table = gr.Dataframe(headers=["rank", "text", "score", "sum of log-probs", "length", "ended with end-of-text"],
                             interactive=False, wrap=True, elem_id="beams-table")
        gr.Markdown("score = sum of log-probs / length ^ length penalty: beam search keeps the highest, and "
                    "**Generate** shows rank 1.")

    @user_errors
    def beams(owner, run_id, which, upload, prompt, **decoding):
        rows = lab.beams(owner=owner, run_id=run_id, which=which, upload=upload, prompt=prompt, decoding=decoding)
        return {table: [[r.rank, r.text, r.score, r.sum_logprobs, r.length, r.ended] for r in rows]}

    button.click(beams, inputs_kwargs=inputs, outputs=[table], api_name="beams", **GENERATION)


def _memorisation_meter(lab: Lab, tab: SampleTab, inputs: dict) -> None:
    with gr.Accordion("Memorisation meter: how much of the output is copied from the training text", open=True):
        button = gr.Button("Check the output for copying", elem_id="memorise")
        view = gr.HTML(elem_id="memorise-view")

    @user_errors
    def check(owner, run_id, which, upload, prompt, output):
        return {view: lab.memorisation(owner=owner, run_id=run_id, which=which, upload=upload, prompt=prompt,
                                       output=output).html}

    names = ("owner", "run_id", "which", "upload", "prompt")
    button.click(check, inputs_kwargs={**{n: inputs[n] for n in names}, "output": tab.output}, outputs=[view],
                 api_name="memorisation")


def _tokens_panel(lab: Lab, session: Session, tab: SampleTab, generated) -> None:
    """The prompt and output as the checkpoint's tokenizer cuts them: on request, and after each generation."""
    with gr.Accordion("Tokens: how the model reads this text", open=False):
        gr.Markdown("The output (or, before any, the prompt) cut by this checkpoint's tokenizer, as the model would "
                    "read it back. It follows each generation; hover over a token for its id.")
        button = gr.Button("Show tokens", elem_id="show-tokens")
        view = gr.HTML(elem_id="sample-tokens", css_template=TOKEN_CSS)

    @user_errors
    def tokens(owner, run_id, which, upload, prompt, output):
        result = lab.tokens(owner=owner, run_id=run_id, which=which, upload=upload, prompt=prompt, output=output)
        return {view: result.html}

    event = dict(fn=tokens, inputs_kwargs={"owner": session.owner, "run_id": tab.run, "which": tab.which,
                                           "upload": tab.upload, "prompt": tab.prompt, "output": tab.output},
                 outputs=[view])
    button.click(**event, api_name="tokens")
    generated.success(**event, api_visibility="private")
