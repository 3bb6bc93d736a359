"""Hugging Face interop: GPT-2 weights in, Hugging Face format out, and pushing to the Hub.

    convert.py       configs and weights: Hugging Face GPT-2 <-> gptlab (Conv1D transposes); HubError
    download.py      load_pretrained, import_pretrained: GPT-2 from the Hub (through its cache) or a folder
    export.py        export_hf (a folder transformers loads as GPT2LMHeadModel), push_to_hub
    card.py          model_card: the README.md of an exported model
    hf_tokenizer.py  GPT-2's vocab.json and merges.txt, made offline from the bundled tiktoken ranks

This package is the only part of gptlab that imports huggingface_hub (and httpx2, its HTTP client);
the rest of gptlab (the CLI, the app) imports it inside the functions that use it, because
huggingface_hub is slow to import. It never imports transformers: the folders it writes are checked
against transformers in the tests. Importing the package imports all of it, so `gptlab.hub.convert`
too loads huggingface_hub.
"""

from gptlab.hub.convert import (CHARS_FILE, CONV1D_WEIGHTS, HF_ACTIVATIONS, HubError, config_from_hf,  # noqa: F401
                                config_to_hf, from_hf_state_dict, to_hf_state_dict)
from gptlab.hub.download import (HUB_ALIASES, INDEX_FILE, KNOWN_LICENSES, PICKLE_FILES,  # noqa: F401
                                 PretrainedModel, import_pretrained, load_pretrained)
from gptlab.hub.card import (CARD_SKIPS_TRAIN, DATA_COUNTS, LOSS_PLOT, METRIC_LABELS, find_loss_plot,  # noqa: F401
                             model_card)
from gptlab.hub.export import EXPORT_FILES, export_hf, push_to_hub  # noqa: F401

# Every public name of the former gptlab/hub.py is importable from here; `import *` gives the ones it exported.
__all__ = ["HubError", "PretrainedModel", "HUB_ALIASES", "config_from_hf", "config_to_hf", "from_hf_state_dict",
           "to_hf_state_dict", "load_pretrained", "import_pretrained", "export_hf", "push_to_hub", "model_card"]
