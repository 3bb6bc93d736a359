"""Configs: every bad field gets an actionable ConfigError; presets, overrides, serialisation and the
learning-rate schedule behave as documented."""

import math
from dataclasses import FrozenInstanceError, asdict

import pytest

from gptlab.config import (
    DEFAULT_PRESET,
    PRESETS,
    ConfigError,
    ModelConfig,
    SampleConfig,
    TrainConfig,
    preset,
    to_dict,
)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# --------------------------------------------------------------------------------------------
# Validation: the message names the field, so a user knows what to change.


@pytest.mark.parametrize("field, value", [
    ("vocab_size", 0), ("vocab_size", -5), ("vocab_size", 2.5), ("vocab_size", True),
    ("block_size", 0), ("n_layer", 0), ("n_head", 0), ("n_embd", 0), ("n_embd", "64"),
    ("dropout", -0.1), ("dropout", 1.0),
])
def test_model_config_bad_field(field, value):
    with pytest.raises(ConfigError, match=field):
        ModelConfig(**{field: value})


def test_model_config_head_divisibility_suggests_a_fix():
    with pytest.raises(ConfigError) as info:
        ModelConfig(n_embd=100, n_head=6)
    message = str(info.value)
    assert "n_embd" in message and "n_head" in message
    suggested = int(message.split("try n_embd=")[1].rstrip("."))
    assert suggested % 6 == 0
    ModelConfig(n_embd=suggested, n_head=6)  # the suggestion is itself valid


@pytest.mark.parametrize("field, value", [
    ("tokenizer", "bpe"), ("val_fraction", 0.0), ("val_fraction", 1.0),
    ("batch_size", 0), ("grad_accum_steps", 0), ("max_steps", 0), ("eval_interval", 0), ("eval_batches", 0),
    ("sample_tokens", 0), ("log_interval", 0), ("batch_size", 1.5),
    ("warmup_steps", -1), ("sample_interval", -1), ("checkpoint_interval", -1),
    ("learning_rate", 0.0), ("lr_schedule", "step"), ("weight_decay", -0.1),
    ("beta1", 1.0), ("beta2", -0.1), ("grad_clip", -1.0), ("max_time", 0), ("patience", 0), ("patience", 1.5),
    ("device", "tpu"),
])
def test_train_config_bad_field(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value})


def test_train_config_min_lr_above_learning_rate():
    with pytest.raises(ConfigError, match="min_lr"):
        TrainConfig(learning_rate=1e-3, min_lr=1e-2)
    with pytest.raises(ConfigError, match="min_lr"):
        TrainConfig(min_lr=-1e-5)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_train_config_devices_accepted(device):
    assert TrainConfig(device=device).device == device


def test_train_config_optional_fields_accept_none():
    config = TrainConfig(max_time=None, patience=None)
    assert config.max_time is None and config.patience is None
    assert TrainConfig(max_time=30.0, patience=3).patience == 3


def test_choices_are_listed_in_the_message():
    with pytest.raises(ConfigError, match="cosine, linear, wsd, constant"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ConfigError, match="char, gpt2"):
        TrainConfig(tokenizer="bpe")
    with pytest.raises(ConfigError, match="greedy, sample, beam"):
        SampleConfig(strategy="nucleus")
    with pytest.raises(ConfigError, match="gelu_tanh, gelu"):
        ModelConfig(activation="relu")


# Values of the wrong type come from JSON files and form fields; they should be ConfigErrors too,
# not TypeError/AttributeError from a comparison (load_checkpoint only catches ConfigError and TypeError).
@pytest.mark.parametrize("make", [
    lambda: ModelConfig(dropout="0.1"),
    lambda: ModelConfig(bias="no"),
    lambda: TrainConfig(device=None),
    lambda: TrainConfig(learning_rate="1e-3"),
    lambda: TrainConfig(val_fraction=None),
    lambda: TrainConfig(batch_size=True),
    lambda: SampleConfig(temperature="0.8"),
], ids=["dropout-str", "bias-str", "device-none", "lr-str", "val-none", "batch-bool", "temp-str"])
def test_wrong_types_give_config_error(make):
    with pytest.raises(ConfigError):
        make()


@pytest.mark.parametrize("changes, field", [
    (dict(strategy="sample", temperature=0.0), "temperature"),
    (dict(strategy="sample", temperature=-1.0), "temperature"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(top_k=0), "top_k"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(min_p=-0.1), "min_p"),
    (dict(min_p=1.1), "min_p"),
    (dict(repetition_penalty=0.0), "repetition_penalty"),
    (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size"),
    (dict(num_beams=0), "num_beams"),
    (dict(strategy="sample", num_beams=4), "beam"),
    (dict(strategy="greedy", num_beams=4), "beam"),
    (dict(strategy="beam", num_beams=1), "num_beams"),
    (dict(stop=("",)), "stop"),
])
def test_sample_config_bad_field(changes, field):
    with pytest.raises(ConfigError, match=field):
        SampleConfig(**changes)


def test_sample_config_temperature_zero_is_fine_for_greedy_and_beam():
    assert SampleConfig(strategy="greedy", temperature=0.0).temperature == 0.0
    assert SampleConfig(strategy="beam", num_beams=3, temperature=0.0).num_beams == 3
    assert SampleConfig(top_p=1.0, min_p=0.0, top_k=5).top_p == 1.0


def test_sample_config_stop_list_becomes_tuple():
    config = SampleConfig(stop=["\n\n", "THE END"])
    assert config.stop == ("\n\n", "THE END")
    hash(config)  # frozen and hashable, so a list would have broken it


def test_sample_config_single_stop_string_is_not_split():
    assert SampleConfig(stop="\n\n").stop == ("\n\n",)


# --------------------------------------------------------------------------------------------
# Presets, overrides, serialisation


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_build_valid_configs(name):
    model = ModelConfig.preset(name)
    train = TrainConfig.preset(name)
    assert isinstance(model, ModelConfig) and isinstance(train, TrainConfig)
    assert PRESETS[name].description
    assert model.num_params() > 0
    assert train.warmup_steps < train.max_steps


def test_default_preset_exists_and_known_presets():
    assert DEFAULT_PRESET in PRESETS
    assert {"tiny", "char-cpu", "gpt2"} <= set(PRESETS)


def test_gpt2_preset_is_gpt2_small():
    model = ModelConfig.preset("gpt2")
    assert (model.vocab_size, model.block_size, model.n_layer, model.n_head, model.n_embd) == (50257, 1024, 12, 12, 768)
    assert TrainConfig.preset("gpt2").tokenizer == "gpt2"
    # 124M with the tied head, the number GPT-2 small is known by.
    assert model.num_params() == 124_439_808


def test_architecture_defaults_to_gpt2_and_nanochat_is_checked():
    old = ModelConfig.from_dict({"vocab_size": 65, "n_layer": 2, "n_head": 2, "n_embd": 32})  # an old checkpoint
    assert old.architecture == "gpt2" and old.biases
    nanochat = ModelConfig.preset("nanochat-cpu")
    assert nanochat.architecture == "nanochat" and not nanochat.biases
    assert not ModelConfig(architecture="nanochat", bias=True).biases  # ignored, as its help says
    # Per block 12 C² (no norms, no biases); wte plus the untied head; no position table.
    C, V = nanochat.n_embd, nanochat.vocab_size
    assert nanochat.num_params() == nanochat.n_layer * 12 * C * C + 2 * V * C
    assert nanochat.num_params(include_embeddings=False) == nanochat.n_layer * 12 * C * C
    with pytest.raises(ConfigError, match="architecture must be one of gpt2, nanochat"):
        ModelConfig(architecture="llama")
    with pytest.raises(ConfigError, match="even head size.*try n_embd=8"):
        ModelConfig(architecture="nanochat", n_embd=6, n_head=2)
    assert ModelConfig(n_embd=6, n_head=2).head_size == 3  # gpt2 has no such rule


def test_nanogpt_char_preset_size():
    # nanoGPT's Shakespeare char model (bias=False, its train.py default) reports
    # "number of parameters: 10.65M", a count that leaves out wpe.
    model = ModelConfig.preset("char-gpu", bias=False)
    assert round((model.num_params() - model.block_size * model.n_embd) / 1e6, 2) == 10.65


def test_preset_overrides():
    model = ModelConfig.preset("tiny", n_layer=3, dropout=0.1)
    assert model.n_layer == 3 and model.dropout == 0.1
    assert model.n_embd == PRESETS["tiny"].model["n_embd"]
    train = TrainConfig.preset("tiny", max_steps=7, warmup_steps=2)
    assert train.max_steps == 7 and train.batch_size == PRESETS["tiny"].train["batch_size"]


def test_preset_overrides_are_validated():
    with pytest.raises(ConfigError, match="n_head"):
        ModelConfig.preset("tiny", n_head=5)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="tiny"):  # the message lists the choices
        preset("huge")
    with pytest.raises(ConfigError, match="huge"):
        ModelConfig.preset("huge")


@pytest.mark.parametrize("make", [
    lambda: ModelConfig.preset("tiny", n_layers=3),
    lambda: TrainConfig.preset("tiny", lr=1e-3),
    lambda: ModelConfig().replace(heads=2),
    lambda: TrainConfig().replace(steps=2),
    lambda: SampleConfig().replace(temp=0.5),
    lambda: ModelConfig.from_dict({"n_layer": 2, "depth": 4}),
    lambda: SampleConfig.from_dict({"beams": 2}),
])
def test_unknown_names_raise(make):
    with pytest.raises(ConfigError, match="Unknown .* setting") as info:
        make()
    assert "Known:" in str(info.value)


def test_replace_validates_and_keeps_the_original():
    base = ModelConfig()
    wider = base.replace(n_embd=768)
    assert wider.n_embd == 768 and base.n_embd == 384
    with pytest.raises(ConfigError):
        base.replace(n_embd=100)
    with pytest.raises(ConfigError):
        SampleConfig().replace(temperature=0.0)
    assert SampleConfig().replace(strategy="greedy", temperature=0.0).strategy == "greedy"


@pytest.mark.parametrize("config", [
    ModelConfig(vocab_size=100, bias=False, dropout=0.1),
    TrainConfig(tokenizer="gpt2", max_time=12.5, patience=4, lr_schedule="linear"),
    SampleConfig(strategy="beam", num_beams=3, stop=("\n",), seed=7, top_k=10),
], ids=["model", "train", "sample"])
def test_from_dict_round_trip(config):
    cls = type(config)
    assert cls.from_dict(asdict(config)) == config
    assert cls.from_dict(to_dict(config)) == config


def test_to_dict_is_json_serialisable():
    import json

    values = to_dict(SampleConfig(stop=("a", "b")))
    assert values["stop"] == ["a", "b"]
    assert SampleConfig.from_dict(json.loads(json.dumps(values))) == SampleConfig(stop=("a", "b"))


def test_configs_are_frozen():
    with pytest.raises(FrozenInstanceError):
        ModelConfig().n_layer = 3  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# Derived numbers


def test_head_size():
    assert ModelConfig(n_embd=384, n_head=6).head_size == 64


def test_num_params_without_embeddings():
    c = ModelConfig(vocab_size=100, block_size=16, n_embd=32, n_head=2, n_layer=2)
    assert c.num_params() - c.num_params(include_embeddings=False) == (100 + 16) * 32


def test_flops_per_token_grows_with_size():
    small = ModelConfig.preset("tiny")
    big = ModelConfig.preset("char-cpu")
    assert 6 * small.num_params(include_embeddings=False) < small.flops_per_token() < big.flops_per_token()


def test_training_memory_grows_with_batch_and_model():
    c = ModelConfig.preset("tiny")
    sizes = [c.training_memory_bytes(b) for b in (1, 2, 8, 64)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    assert c.training_memory_bytes(1) > 4 * c.num_params() * 4  # at least weights, grads, two moments
    assert ModelConfig.preset("gpt2").training_memory_bytes(8) > c.training_memory_bytes(8)
    assert c.training_memory_bytes(8, bytes_per_float=2) < c.training_memory_bytes(8)


# --------------------------------------------------------------------------------------------
# Learning-rate schedule


def _schedule(**kw):
    base = dict(learning_rate=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=100)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_warmup_rises_linearly_to_the_peak(schedule):
    c = _schedule(lr_schedule=schedule)
    lrs = [c.lr_at(s) for s in range(c.warmup_steps + 1)]
    steps = [b - a for a, b in zip(lrs, lrs[1:])]
    assert all(s > 0 for s in steps)
    assert all(math.isclose(s, steps[0], rel_tol=1e-9) for s in steps)  # a straight line
    assert 0 < lrs[0] < c.learning_rate  # the first step already learns something
    assert math.isclose(lrs[-1], c.learning_rate)


def test_cosine_reaches_min_lr_at_max_steps():
    c = _schedule(lr_schedule="cosine")
    assert math.isclose(c.lr_at(c.max_steps), c.min_lr)
    assert math.isclose(c.lr_at(c.max_steps + 50), c.min_lr)  # clamped past the end
    mid = c.warmup_steps + (c.max_steps - c.warmup_steps) / 2
    assert math.isclose(c.lr_at(mid), (c.learning_rate + c.min_lr) / 2)


def test_linear_is_a_straight_line_to_min_lr():
    c = _schedule(lr_schedule="linear")
    assert math.isclose(c.lr_at(c.max_steps), c.min_lr)
    after = [c.lr_at(s) for s in range(c.warmup_steps, c.max_steps + 1)]
    steps = [a - b for a, b in zip(after, after[1:])]
    assert all(math.isclose(s, steps[0], rel_tol=1e-9) for s in steps)
    mid = c.warmup_steps + (c.max_steps - c.warmup_steps) / 2
    assert math.isclose(c.lr_at(mid), (c.learning_rate + c.min_lr) / 2)


def test_constant_stays_at_the_peak():
    c = _schedule(lr_schedule="constant")
    assert all(c.lr_at(s) == c.learning_rate for s in range(c.warmup_steps, 2 * c.max_steps))


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_decay_is_monotone_and_bounded(schedule):
    c = _schedule(lr_schedule=schedule)
    lrs = [c.lr_at(s) for s in range(c.warmup_steps, c.max_steps + 20)]
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))
    assert all(c.min_lr - 1e-15 <= lr <= c.learning_rate for lr in lrs)


def test_no_warmup_starts_at_the_peak():
    c = _schedule(warmup_steps=0)
    assert c.lr_at(0) == c.learning_rate


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_schedule_follows_the_clock_when_it_is_further_along(schedule):
    # With max_time the decay follows whichever is further along, the steps or the wall clock.
    c = _schedule(lr_schedule=schedule)
    assert math.isclose(c.lr_at(30, time_fraction=1.0), c.min_lr)
    assert c.lr_at(30, time_fraction=0.5) < c.lr_at(30)
    mid = c.warmup_steps + (c.max_steps - c.warmup_steps) // 2
    assert math.isclose(c.lr_at(20, time_fraction=0.5), c.lr_at(mid))
    assert c.lr_at(80, time_fraction=0.1) == c.lr_at(80)  # the steps are further along here
    assert c.lr_at(c.max_steps, time_fraction=0.0) == c.lr_at(c.max_steps, time_fraction=1.0)
    fractions = [c.lr_at(30, time_fraction=f / 10) for f in range(11)]
    assert all(b <= a for a, b in zip(fractions, fractions[1:]))


def test_warmup_longer_than_training_does_not_crash():
    c = _schedule(warmup_steps=200, max_steps=100)
    lrs = [c.lr_at(s) for s in range(0, 300)]
    assert all(0 < lr <= c.learning_rate for lr in lrs)


def test_warmup_longer_than_the_run_is_documented_as_allowed_and_rises_all_run():
    # Allowed rather than refused (a preset's warmup with --max-steps 20 is the common case), so the
    # help a user reads in --help and in the app says what happens.
    assert "more than max_steps is allowed" in TrainConfig.__dataclass_fields__["warmup_steps"].metadata["help"]
    c = _schedule(warmup_steps=500, max_steps=100)
    lrs = [c.lr_at(s) for s in range(c.max_steps)]
    assert all(b > a for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] == pytest.approx(c.learning_rate * c.max_steps / (c.warmup_steps + 1))


def test_wsd_schedule_is_flat_then_cools_down_linearly():
    c = TrainConfig(lr_schedule="wsd", max_steps=1000, warmup_steps=100, learning_rate=1e-3, min_lr=1e-4)
    assert c.lr_at(100) == c.lr_at(500) == c.lr_at(730) == pytest.approx(1e-3)  # flat for 70% after warmup
    assert c.lr_at(1000) == pytest.approx(1e-4)
    assert c.lr_at(865) == pytest.approx(1e-4 + 0.5 * 9e-4)
    assert c.lr_at(300, time_fraction=0.85) == pytest.approx(1e-4 + 0.5 * 9e-4)  # follows the clock too


# --------------------------------------------------------------------------------------------
# Hostile numbers: every size is bounded, every number finite, every whole number whole. Each of
# these reached a user as a hang, an overflow deep in torch or a silently truncated value.

from dataclasses import fields  # noqa: E402

from gptlab.config import MAX_SEED, vocab_size_for  # noqa: E402

CONFIGS = (ModelConfig, TrainConfig, SampleConfig)
STEPS = (0, 1_000_000_000)
BOUNDS = {
    ModelConfig: dict(vocab_size=(1, 1_048_576), block_size=(1, 65_536), n_layer=(1, 256), n_head=(1, 65_536),
                      n_embd=(1, 65_536)),
    TrainConfig: dict(batch_size=(1, 65_536), grad_accum_steps=(1, 65_536), warmup_steps=STEPS,
                      max_steps=(1, 1_000_000_000), eval_interval=(1, 1_000_000_000), eval_batches=(1, 100_000),
                      patience=(1, 1_000_000), sample_interval=STEPS, sample_tokens=(1, 100_000),
                      snapshot_tokens=(0, 1000),
                      checkpoint_interval=STEPS, log_interval=(1, 1_000_000_000), seed=(0, 2**63 - 1)),
    SampleConfig: dict(max_new_tokens=(1, 100_000), top_k=(1, 1_048_576), no_repeat_ngram_size=(0, 65_536),
                       num_beams=(1, 64), seed=(0, 2**63 - 1)),
}
BOUNDED = [(cls, f, bounds) for cls in CONFIGS for f in fields(cls) for name, bounds in BOUNDS[cls].items()
           if f.name == name]
WHOLE = [(cls, f) for cls in CONFIGS for f in fields(cls) if f.type in ("int", "int | None")]
FLOATS = [(cls, f) for cls in CONFIGS for f in fields(cls) if f.type in ("float", "float | None")]


def _values(cls, f, value) -> dict:
    """{field: value}, with the strategy that makes a decoding form keep the field."""
    return {f.name: value, **({"strategy": "beam"} if cls is SampleConfig and f.name == "num_beams" else {})}


def _id(param):
    return f"{param[0].__name__}.{param[1].name}" if isinstance(param, tuple) else str(param)


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_whole_number_a_user_can_type_has_finite_bounds_beside_its_field(cls):
    # The bounds live in the field's setting(...), where the CLI and the forms can show them.
    assert {f.name: f.metadata.get("bounds") for f in fields(cls) if f.type in ("int", "int | None")} == BOUNDS[cls]


@pytest.mark.parametrize("param", BOUNDED, ids=_id)
@pytest.mark.parametrize("how", ["direct", "from_dict", "from_form"])
def test_a_size_above_its_bound_names_the_range(param, how):
    cls, f, (low, high) = param
    for value, shown in ((high + 1, f"{high + 1:,}"), (1e22, "1e+22"), (10**22, "1e+22")):
        values = _values(cls, f, value)
        make = {"direct": lambda: cls(**values), "from_dict": lambda: cls.from_dict(values),
                "from_form": lambda: cls.from_form(values)}[how]
        if how == "direct" and isinstance(value, float):
            continue  # a float is a form's or a file's way of saying it; both are covered
        with pytest.raises(ConfigError) as e:
            make()
        assert str(e.value).startswith(f"{f.name} must be between {low:,} and {high:,}"), str(e.value)
        assert str(e.value).endswith(f"got {shown}."), str(e.value)


def test_a_size_at_its_bound_is_accepted():
    assert ModelConfig(block_size=65_536).block_size == 65_536
    assert TrainConfig(max_steps=1_000_000_000, seed=MAX_SEED).seed == 2**63 - 1
    assert SampleConfig(strategy="beam", num_beams=64).num_beams == 64


@pytest.mark.parametrize("param", FLOATS, ids=_id)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 10**400], ids=["inf", "-inf", "nan", "10**400"])
def test_every_float_must_be_finite(param, value):
    cls, f = param
    for make in (lambda: cls(**{f.name: value}), lambda: cls.from_dict({f.name: value}),
                 lambda: cls.from_form({f.name: value})):
        with pytest.raises(ConfigError, match=rf"^{f.name} must be a finite number, got "):
            make()


@pytest.mark.parametrize("param", WHOLE, ids=_id)
@pytest.mark.parametrize("value", [1.5, math.inf, -math.inf, math.nan, "3", True], ids=repr)
def test_every_whole_number_refuses_what_is_not_one(param, value):
    cls, f = param
    values = _values(cls, f, value)
    for make in (lambda: cls(**values), lambda: cls.from_dict(values), lambda: cls.from_form(values)):
        with pytest.raises(ConfigError, match=rf"^{f.name} must be a whole number, got "):
            make()


def test_a_seed_of_one_and_a_half_is_refused_not_truncated():
    with pytest.raises(ConfigError, match=r"^seed must be a whole number, got 1\.5\.$"):
        TrainConfig(seed=1.5)


@pytest.mark.parametrize("cls", [TrainConfig, SampleConfig])
@pytest.mark.parametrize("seed", [1e30, 2**63, -1])
def test_a_seed_torch_cannot_take_is_refused_with_the_range(cls, seed):
    with pytest.raises(ConfigError, match=r"^seed must be between 0 and 9,223,372,036,854,775,807, got "):
        cls.from_form({"seed": seed})


def test_whole_floats_from_json_or_forms_become_ints():
    config = TrainConfig.from_dict({"max_steps": 30.0, "patience": 2.0, "learning_rate": 1})
    assert (config.max_steps, config.patience) == (30, 2)
    assert type(config.max_steps) is int and type(config.patience) is int and type(config.learning_rate) is float


def test_the_vocabulary_size_of_a_form_is_checked_like_the_field():
    assert vocab_size_for("char", None) == vocab_size_for("char", 0) == 256 and vocab_size_for("char", 70.0) == 70
    for bad in (math.nan, math.inf, 2.5, 10**22):
        with pytest.raises(ConfigError, match=r"^vocab_size must be a whole number between 1 and 1,048,576"):
            vocab_size_for("char", bad)


@pytest.mark.parametrize("device", ["cuda:abc", "cpu:", "cuda:-1"])
def test_a_device_torch_cannot_parse_is_refused(device):
    with pytest.raises(ConfigError, match="device must be auto, cpu, cuda, cuda:N or mps"):
        TrainConfig(device=device)


@pytest.mark.parametrize("stop", [5, None, math.nan, [1]])
def test_stop_strings_of_the_wrong_type_are_a_config_error(stop):
    with pytest.raises(ConfigError, match="^stop must be a list of non-empty texts"):
        SampleConfig(stop=stop)


@pytest.mark.parametrize("make", [
    lambda: ModelConfig(block_size=10**5000), lambda: ModelConfig(dropout=10**5000), lambda: ModelConfig(bias=10**5000),
    lambda: TrainConfig(patience=10**5000), lambda: SampleConfig(top_k=-10**5000),
], ids=["int", "float", "bool", "before-bounds", "negative"])
def test_an_int_too_long_to_print_still_gets_a_config_error_with_a_short_message(make):
    # str() refuses ints over 4,300 digits, so quoting one with !r raised a bare ValueError.
    with pytest.raises(ConfigError, match=r"got a number with about 5001 digits\.$"):
        make()


def test_a_long_text_is_quoted_briefly():
    with pytest.raises(ConfigError) as e:
        TrainConfig(lr_schedule="x" * 10_000)
    assert str(e.value) == "lr_schedule must be one of cosine, linear, wsd, constant, got '" + "x" * 76 + "...."
