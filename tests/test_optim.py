"""The optimiser option: which weights Muon takes, its own learning rate under the schedule, its
state saved and loaded, and the settings a user can get wrong."""

import pytest
import torch
import torch.nn as nn

from gptlab.config import ConfigError, TrainConfig
from gptlab.events import StepEvent
from gptlab.model import GPT
from gptlab.optim import Optimizers, make_optimizer, split_parameters
from gptlab.trainer import Trainer
from tests.test_trainer import dataset, small_model_config, small_train_config

CPU = torch.device("cpu")


def names(model, params) -> set[str]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {by_id[id(p)] for p in params}


def test_muon_takes_the_hidden_matrices_and_adamw_the_tied_head_embeddings_norms_and_biases():
    model = GPT(small_model_config(n_layer=2))
    parts = {kind: names(model, params) for kind, params in split_parameters(model).items()}
    hidden = {f"transformer.h.{i}.{m}.weight" for i in range(2)
              for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    assert parts["hidden"] == hidden
    assert parts["head_and_embeddings"] == {"transformer.wte.weight", "transformer.wpe.weight"}  # lm_head is wte
    assert parts["other"] and all(n.endswith("bias") or ".ln_" in n or "ln_f" in n for n in parts["other"])
    assert sum(map(len, parts.values())) == len(list(model.parameters()))


class UntiedHead(nn.Module):
    """Not a GPT: an untied output head, named the transformers way, must stay with AdamW."""

    def __init__(self, name_the_head: bool):
        super().__init__()
        self.wte, self.hidden, self.norm = nn.Embedding(10, 8), nn.Linear(8, 8), nn.LayerNorm(8)
        self.lm_head = nn.Linear(8, 10, bias=False)
        if name_the_head:
            self.get_output_embeddings = lambda: self.lm_head

    def forward(self, x, y):
        logits = self.lm_head(self.norm(self.hidden(self.wte(x))))
        return logits, nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten() % 10)


@pytest.mark.parametrize("name_the_head", [True, False])
def test_an_untied_head_goes_to_adamw_when_the_model_names_it(name_the_head):
    model = UntiedHead(name_the_head)
    hidden = names(model, split_parameters(model)["hidden"])
    assert hidden == ({"hidden.weight"} if name_the_head else {"hidden.weight", "lm_head.weight"})


def test_adamw_alone_is_the_default_and_muon_adds_an_optimizer_with_its_own_rate():
    model = GPT(small_model_config())
    assert isinstance(make_optimizer(model, small_train_config(), CPU), torch.optim.AdamW)
    both = make_optimizer(model, small_train_config(optimizer="muon", muon_lr=0.05, learning_rate=1e-3), CPU)
    assert isinstance(both, Optimizers) and set(both.optimizers) == {"adamw", "muon"}
    muon = both.optimizers["muon"]
    assert isinstance(muon, torch.optim.Muon) and muon.param_groups[0]["lr"] == 0.05
    assert names(model, muon.param_groups[0]["params"]) == names(model, split_parameters(model)["hidden"])
    assert both.optimizers["adamw"].param_groups[0]["weight_decay"] == 0.0


def test_the_schedule_scales_both_learning_rates_alike():
    config = small_train_config(optimizer="muon", muon_lr=0.02, learning_rate=2e-3, warmup_steps=4, max_steps=3,
                                eval_interval=100)
    trainer = Trainer(GPT(small_model_config()), config, dataset())
    rates = []
    trainer.on_step = lambda step: rates.append([g["lr"] for g in trainer.optimizer.param_groups])
    steps = [e for e in trainer.run() if isinstance(e, StepEvent)]
    assert len(rates) == 3
    for event, (adamw, muon) in zip(steps, rates):
        assert adamw == pytest.approx(event.lr) and muon == pytest.approx(event.lr * 10)
    assert rates[0][1] == pytest.approx(0.02 * config.lr_at(0) / config.learning_rate)  # warmup: 0.02 / 5


def test_muon_moves_only_its_weights_and_learns():
    torch.manual_seed(0)
    model = GPT(small_model_config())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = Trainer(model, small_train_config(optimizer="muon", max_steps=12), dataset())
    losses = [e.loss for e in trainer.run() if isinstance(e, StepEvent)]
    assert losses[-1] < losses[0]
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_the_state_round_trips_and_a_different_optimizers_state_is_refused_with_a_sentence():
    model = GPT(small_model_config())
    config = small_train_config(optimizer="muon")
    trainer = Trainer(model, config, dataset())
    list(trainer.run())
    state = trainer.optimizer.state_dict()
    assert set(state) == {"adamw", "muon"} and state["muon"]["state"]  # Muon's momentum is saved
    again = make_optimizer(model, config, CPU)
    again.load_state_dict(state)
    for (_, a), (_, b) in zip(sorted(again.optimizers.items()), sorted(trainer.optimizer.optimizers.items())):
        for i, s in b.state_dict()["state"].items():
            for key, value in s.items():
                torch.testing.assert_close(a.state_dict()["state"][i][key], value, rtol=0, atol=0)
    adamw_only = make_optimizer(model, small_train_config(), CPU).state_dict()
    with pytest.raises(ValueError, match="AdamW alone.*resumes with the optimizer it started with"):
        again.load_state_dict(adamw_only)


@pytest.mark.parametrize("settings, message", [
    (dict(optimizer="sgd"), "optimizer must be one of adamw, muon"),
    (dict(muon_lr=0.0), "muon_lr must be above 0"),
    (dict(muon_lr=float("inf")), "muon_lr"),
    (dict(optimizer="muon", fsdp=True), "drop fsdp"),
])
def test_bad_optimizer_settings_are_refused_with_a_sentence(settings, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**settings)


def test_an_old_config_without_the_optimizer_settings_is_adamw():
    values = {k: v for k, v in TrainConfig().__dict__.items() if k not in ("optimizer", "muon_lr")}
    assert TrainConfig.from_dict(values).optimizer == "adamw"


def test_nanochat_untied_head_goes_to_adamw_without_decay_like_the_embeddings():
    model = GPT(small_model_config().replace(architecture="nanochat"))
    parts = split_parameters(model)
    assert "lm_head.weight" in names(model, parts["head_and_embeddings"])
    assert "lm_head.weight" not in names(model, parts["hidden"])
    assert names(model, parts["hidden"]) == {n for n, p in model.named_parameters()
                                             if p.dim() == 2 and n.startswith("transformer.h.")}


# -- Newton-Schulz: torch's own where bf16 is native, the same iteration in float32 where it is not ----

def newton_schulz_float64(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """The quintic iteration of torch.optim.Muon (its default coefficients), written out in float64."""
    a, b, c = 3.4445, -4.775, 2.0315
    x = g.double() if g.size(0) <= g.size(1) else g.double().T
    x = x / x.norm().clamp(min=1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x if g.size(0) <= g.size(1) else x.T


@pytest.mark.parametrize("shape", [(6, 10), (10, 6), (8, 8)])
def test_newton_schulz_in_float32_is_torchs_iteration_and_bf16_rounds_it(monkeypatch, shape):
    from gptlab import optim

    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    exact = newton_schulz_float64(g)
    monkeypatch.setattr(optim, "native_bf16", lambda: False)
    fp32 = optim.newton_schulz(g, (3.4445, -4.775, 2.0315), 5, 1e-7)
    assert fp32.dtype == torch.float32 and fp32.shape == g.shape
    torch.testing.assert_close(fp32.double(), exact, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(optim, "native_bf16", lambda: True)
    bf16 = optim.newton_schulz(g, (3.4445, -4.775, 2.0315), 5, 1e-7)
    assert bf16.dtype == torch.bfloat16  # torch's own, untouched
    torch.testing.assert_close(bf16.double(), exact, rtol=0.05, atol=0.05)


def test_muon_steps_through_newton_schulz_on_every_cpu():
    """make_optimizer routes torch.optim.Muon's step through gptlab's newton_schulz, which is what
    keeps Muon in float32 on a CPU that would emulate bf16."""
    from gptlab import optim

    model = GPT(small_model_config())
    make_optimizer(model, small_train_config(optimizer="muon"), torch.device("cpu"))
    assert torch.optim._muon._zeropower_via_newtonschulz is optim.newton_schulz
