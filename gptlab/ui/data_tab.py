"""The Data tab: choose the text, see its statistics and baselines, its tokens, and the shifting trick."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from gptlab.config import TrainConfig
from gptlab.insight.token_views import CSS as TOKEN_CSS
from gptlab.service import SOURCES, Lab
from gptlab.views import Preview
from gptlab.ui.common import user_errors
from gptlab.ui.forms import field_component

TOKENS_NOTE = ("**Tokens**: the model never sees letters, only token ids. The character tokenizer gives one token "
               "per character; GPT-2's byte-pair encoding gives one per common word or word piece, so the same "
               "text is fewer, rarer tokens. The same first characters of your text, cut both ways:")
SHIFT_TRICK = ("**The shifting trick**: at each position the model reads the tokens so far and must predict the "
               "next one, so the targets are the inputs shifted by one token.")


@dataclass(frozen=True)
class DataTab:
    source: gr.Radio
    files: gr.File
    pasted: gr.Textbox
    tokenizer: gr.Radio
    status: gr.Markdown
    stats: gr.Markdown
    head: gr.Textbox
    shift: gr.Dataframe
    tokens: gr.HTML  # the head of the text as each tokenizer cuts it
    vocab: gr.State  # the previewed text's vocabulary size, for the Train tab's size line


def build(tokenizer: str) -> DataTab:
    with gr.Row():
        with gr.Column(scale=1):
            source = gr.Radio(SOURCES, value=SOURCES[0], label="Text to learn from")
            files = gr.File(file_count="multiple", file_types=[".txt", ".md"], type="filepath",
                            label="Your .txt / .md files", visible=False, elem_id="upload")
            pasted = gr.Textbox(lines=8, label="Your text", visible=False, elem_id="paste")
            tokenizer = field_component(TrainConfig, "tokenizer", tokenizer, radio=True)
            status = gr.Markdown(elem_id="data-status")
        with gr.Column(scale=2):
            stats = gr.Markdown(elem_id="data-stats")
            head = gr.Textbox(lines=10, max_lines=10, label="First lines", interactive=False)
    tokens = _token_panel()
    gr.Markdown(SHIFT_TRICK)
    shift = gr.Dataframe(headers=["position", "input token", "target (next token)"], interactive=False,
                         elem_id="shift-table")
    tab = DataTab(source, files, pasted, tokenizer, status, stats, head, shift, tokens, vocab=gr.State(None))

    def show_source_inputs(source):
        return {files: gr.update(visible=source == SOURCES[1]), pasted: gr.update(visible=source == SOURCES[2])}

    source.change(show_source_inputs, inputs_kwargs={"source": source}, outputs=[files, pasted],
                  api_visibility="private")
    return tab


def _token_panel() -> gr.HTML:
    """Char and GPT-2 BPE side by side on the chosen text; the preview fills it."""
    gr.Markdown(TOKENS_NOTE)
    return gr.HTML(elem_id="data-tokens", css_template=TOKEN_CSS)


def wire_preview(lab: Lab, tab: DataTab, block_size: gr.Number) -> dict:
    """The preview follows every input it depends on; returns its event arguments for demo.load."""
    @user_errors
    def preview(source, files, pasted, tokenizer, block_size):
        view: Preview = lab.preview(source=source, files=files, pasted=pasted, tokenizer=tokenizer,
                                    block_size=block_size)
        return {tab.status: view.message, tab.stats: view.stats, tab.head: view.head, tab.shift: view.shift,
                tab.tokens: view.tokens, tab.vocab: view.vocab_size}

    event = dict(fn=preview, inputs_kwargs={"source": tab.source, "files": tab.files, "pasted": tab.pasted,
                                            "tokenizer": tab.tokenizer, "block_size": block_size},
                 outputs=[tab.status, tab.stats, tab.head, tab.shift, tab.tokens, tab.vocab])
    gr.on([tab.source.change, tab.files.change, tab.pasted.blur, tab.tokenizer.change, block_size.change],
          **event, api_name="preview", concurrency_limit=4)  # a light preview need not wait behind a GPT-2 one
    return event
