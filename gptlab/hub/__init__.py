"""Hugging Face interop (see gptlab.hub.download); a package so that it can be split by concern."""

from gptlab.hub.download import (CARD_SKIPS_TRAIN, CHARS_FILE, CONV1D_WEIGHTS, DATA_COUNTS, EXPORT_FILES,  # noqa: F401
                                 HF_ACTIVATIONS, HUB_ALIASES, INDEX_FILE, KNOWN_LICENSES, LOSS_PLOT, METRIC_LABELS,
                                 PICKLE_FILES, HubError, PretrainedModel, __all__, config_from_hf, config_to_hf,
                                 export_hf, find_loss_plot, from_hf_state_dict, import_pretrained, load_pretrained,
                                 model_card, push_to_hub, to_hf_state_dict)
