"""`python -m gptlab train|sample|info|import|export|push`: a thin argparse front end.

Every error a user can cause ends as one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import fields
from pathlib import Path

from gptlab import cli_runs
from gptlab.config import DEFAULT_PRESET, PRESETS, ModelConfig, SampleConfig, TrainConfig, to_dict

EXIT_USAGE = 2


def _number(text: str):
    """A flag's number as typed, for the config to judge: argparse's own int() would turn
    --patience 1.5 and --block-size 1e22 into two-line usage errors that name no rule, where the
    config says "patience must be a whole number, got 1.5." Text that is no number goes through as
    text, so that is the config's one-line error too."""
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return text


_TYPES = {"int": _number, "float": _number, "str": str, "int | None": _number, "float | None": _number}


def _add_config_flags(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = (), title: str | None = None) -> None:
    """One --flag per config field, with the help and choices written beside the field. Defaults stay
    None, so only what the user typed overrides the preset (or the config's own default)."""
    group = parser.add_argument_group(title or f"{cls.__name__} overrides (default: the preset's value)")
    for f in fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        meta = f.metadata
        help_text = meta["help"].replace("%", "%%")  # argparse reads help as a %-format
        if f.type == "bool":
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif f.type.startswith("tuple"):  # repeatable: --stop A --stop B
            group.add_argument(flag, dest=f.name, action="append", default=None, metavar="TEXT",
                               help=help_text + " (repeatable)")
        else:
            choices = list(meta["choices"]) if meta["choices"] else None
            group.add_argument(flag, dest=f.name, type=_TYPES[f.type], default=None, choices=choices,
                               metavar=None if choices else f.name.upper(), help=help_text)


def _overrides(args, cls) -> dict:
    return {f.name: getattr(args, f.name) for f in fields(cls)
            if getattr(args, f.name, None) is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gptlab", description="Train a small GPT on your own text.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model (on the bundled Shakespeare unless --data is given)")
    p.add_argument("--data", nargs="+", metavar="PATH", help=".txt or .md files (default: bundled Shakespeare)")
    p.add_argument("--preset", choices=list(PRESETS),
                   help=f"named settings to start from (default {DEFAULT_PRESET})")
    p.add_argument("--out", help="run folder for checkpoints and metrics (default: runs/<time>)")
    p.add_argument("--resume", metavar="DIR", help="continue a stopped run (its folder or a checkpoint in it)")
    p.add_argument("--init-from", metavar="DIR", help="start from a checkpoint's weights (fine-tuning)")
    p.add_argument("--tracker", choices=("none", "trackio"), default="none",
                   help="also log to trackio (pip install trackio; `trackio show` opens it); TensorBoard files "
                        "are always written in <run>/tensorboard")
    _add_config_flags(p, ModelConfig, skip=("vocab_size",))
    _add_config_flags(p, TrainConfig)

    p = sub.add_parser("sweep", help="train one run per value of one or two settings, and print the results")
    p.add_argument("--set", action="append", required=True, metavar="NAME=V1,V2",
                   help="a setting and its 2-6 values, e.g. learning_rate=1e-4,1e-3,1e-2 (twice for a grid of "
                        "at most 12 runs; model_size takes layers x width, e.g. 2x64,4x128)")
    p.add_argument("--data", nargs="+", metavar="PATH", help=".txt or .md files (default: bundled Shakespeare)")
    p.add_argument("--preset", choices=list(PRESETS), help=f"the settings every run starts from (default {DEFAULT_PRESET})")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder for the sweep's runs (one folder each)")
    _add_config_flags(p, ModelConfig, skip=("vocab_size",))
    _add_config_flags(p, TrainConfig)

    p = sub.add_parser("sample", help="generate text from a checkpoint")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="a checkpoint folder, or a run folder (uses best/)")
    p.add_argument("--prompt", default="", help="text to continue (default: start from nothing)")
    _add_config_flags(p, SampleConfig, title="decoding (default: sample at temperature 0.8)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")

    p = sub.add_parser("presets", help="list the named presets with their size and training memory")
    p.add_argument("--batch-size", type=int, help="estimate memory for this batch (default: each preset's)")
    p.add_argument("--vocab-size", type=int, default=65, help="vocabulary of char presets (default 65)")

    p = sub.add_parser("runs", help="list the runs in a folder, with what each changed from the one before")
    p.add_argument("--dir", default="runs", metavar="DIR", help="the folder that holds the run folders (default runs)")
    p.add_argument("--against", metavar="RUN", help="show each run's changes against this run instead")

    p = sub.add_parser("info", help="show a checkpoint's settings, size and metrics")
    p.add_argument("--checkpoint", required=True, metavar="DIR")

    p = sub.add_parser("import", help="turn Hugging Face GPT-2 weights into a gptlab checkpoint")
    p.add_argument("--model", required=True, metavar="NAME_OR_PATH",
                   help="a Hub id such as openai-community/gpt2, or a local Hugging Face folder")
    p.add_argument("--out", required=True, metavar="DIR")

    p = sub.add_parser("export", help="write a checkpoint in Hugging Face format, or as one GGUF file for llama.cpp")
    p.add_argument("--checkpoint", required=True, metavar="DIR")
    p.add_argument("--out", required=True, metavar="PATH", help="a folder (hf), or the .gguf file to write (gguf)")
    p.add_argument("--format", choices=("hf", "gguf"), default="hf",
                   help="hf: a folder for transformers (default); gguf: a file for llama.cpp and Ollama "
                        "(pip install gguf)")
    p.add_argument("--dtype", help="GGUF weights: f16 (default), f32 (exact) or q8_0 (llama.cpp's 8-bit quantisation)")

    p = sub.add_parser("push", help="upload a checkpoint to the Hugging Face Hub, with a model card")
    p.add_argument("--checkpoint", required=True, metavar="DIR")
    p.add_argument("--repo-id", required=True, metavar="NAME", help="e.g. your-name/shakespeare-gpt")
    p.add_argument("--private", action="store_true")
    p.add_argument("--token", help="a Hugging Face token; better leave it out and use HF_TOKEN or "
                                   "`huggingface-cli login`, which keep it out of your shell history")
    return parser


# ---------------------------------------------------------------------------------------------


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


def cmd_train(args) -> int:
    from gptlab import distributed
    from gptlab.trainer import StopFlag, pick_device

    stop, received = StopFlag(), []
    # Under torchrun: join the other processes (a no-op without it); each rank handles its signals.
    dist = distributed.init(pick_device(args.device or "auto")) if distributed.launched() else distributed.LOCAL
    ended = False
    try:
        with _signals_stop(stop, received):
            code = _train(args, stop, received, dist)
        ended = True
        return code
    finally:
        distributed.shutdown(dist, wait=ended)


@contextlib.contextmanager
def _signals_stop(stop, received: list):
    """SIGTERM (what a container or a Space restart sends) and Ctrl-C ask the trainer to stop at the
    end of the step in progress, so last/ is saved; a second Ctrl-C quits at once."""
    def handler(signum, frame):
        if stop.is_set():
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        received.append(signum)
        stop.set(f"the process was asked to stop by {signal.Signals(signum).name}")

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _train(args, stop, received: list, dist) -> int:
    from tqdm import tqdm

    from gptlab.events import CheckpointEvent, DoneEvent, EvalEvent, SampleEvent, StepEvent
    from gptlab.runfolder import describe_checkpoint
    from gptlab.tracking import open_tracker
    from gptlab.training import TrainingRun

    if args.resume:
        ignored = sorted(set(_overrides(args, ModelConfig)) | set(_overrides(args, TrainConfig)) - {"max_steps", "max_time"})
        if args.preset or args.init_from or ignored:
            flags = [f"--{n.replace('_', '-')}" for n in ignored] + ["--preset"] * bool(args.preset)
            raise ValueError(f"A resumed run keeps its own settings, so {', '.join(flags + ['--init-from'] * bool(args.init_from))} "
                             "cannot be used with --resume; only --max-steps, --max-time, --data and --out can.")
        run = TrainingRun.resume(args.resume, out_dir=args.out, data_paths=args.data, max_steps=args.max_steps,
                                 max_time=args.max_time, dist=dist)
    else:
        preset = args.preset or DEFAULT_PRESET
        model_config = ModelConfig.preset(preset, **_overrides(args, ModelConfig))
        train_config = TrainConfig.preset(preset, **_overrides(args, TrainConfig))
        out_dir = args.out or dist.broadcast(f"runs/{time.strftime('%Y%m%d-%H%M%S')}")  # one name for all ranks
        run = (TrainingRun.fine_tune(args.init_from, model_config, train_config, out_dir, args.data, dist=dist)
               if args.init_from else TrainingRun.new(model_config, train_config, out_dir, args.data, dist=dist))
    if not dist.is_main:  # rank 0 alone speaks; the others train, and end as it does
        return next((_exit_code(e, received) for e in run.events(stop) if isinstance(e, DoneEvent)), 1)
    out, stats = run.out_dir, run.data.stats
    tracker = open_tracker(args.tracker, out.name, {"model": to_dict(run.model_config),
                                                    "train": to_dict(run.train_config)}, resume=run.resumed)
    if run.resumed_from is not None:
        print(f"resuming from {describe_checkpoint(run.resumed_from)} in {run.resumed_from.parent}",
              file=sys.stderr)
    print(f"run folder: {out}\ndata: {stats.characters:,} characters, {stats.tokens:,} tokens "
          f"({stats.train_tokens:,} train / {stats.val_tokens:,} val), vocabulary {stats.vocab_size}\n"
          f"model: {run.model_config.num_params() / 1e6:.2f}M parameters, context {run.model_config.block_size}; "
          f"device {run.trainer.device}", file=sys.stderr)
    if run.train_config.fsdp and not dist.active:
        print("note: --fsdp shards a model across the processes torchrun starts; one process trains it whole",
              file=sys.stderr)
    if dist.active:
        world = run.extra["distributed"]
        print(f"distributed: world size {dist.world_size} ({dist.backend}{', FSDP' if dist.fsdp else ', DDP'}); "
              f"global batch {world['global_batch_formula']} (batch x accumulation x world size) = "
              f"{world['global_batch']} windows, {world['tokens_per_step']:,} tokens per step", file=sys.stderr)
    events = run.events(stop, trackers=[tracker] if tracker else [])
    bar = None
    try:
        for event in events:
            if bar is None:
                bar = tqdm(total=run.train_config.max_steps, initial=run.trainer.step, unit="step",
                           dynamic_ncols=True, file=sys.stderr, mininterval=0.2 if sys.stderr.isatty() else 10)
            if isinstance(event, StepEvent):
                bar.set_postfix_str(f"loss {event.loss:.4f} lr {event.lr:.1e} {event.tokens_per_sec:,.0f} tok/s "
                                    f"eta {_fmt_time(event.eta)}", refresh=False)
                bar.update(event.step - bar.n)
            elif isinstance(event, EvalEvent):
                bar.write(f"step {event.step:>6}: train loss {event.train_loss:.4f} (ppl {event.train_ppl:.2f}), "
                          f"val loss {event.val_loss:.4f} (ppl {event.val_ppl:.2f})"
                          f"{'  *best*' if event.is_best else ''}  [{_fmt_time(event.elapsed)}]")
            elif isinstance(event, SampleEvent):
                bar.write(f"--- sample at step {event.step} ---\n{event.text}\n---")
            elif isinstance(event, CheckpointEvent):
                pass  # best/last are named in the closing lines
            elif isinstance(event, DoneEvent):
                bar.close()
                for problem in filter(None, (t.problem for t in run.trackers)):
                    print(f"note: {problem}", file=sys.stderr)
                if event.status in ("failed", "diverged"):
                    print(f"{event.status}: {event.reason}", file=sys.stderr)  # the reason says what to do
                    return 1
                best = f"{event.best_val_loss:.4f}" if event.best_val_loss is not None else "n/a"
                print(f"{event.status}: {event.reason}. {event.step} steps, {event.tokens_seen:,} tokens in "
                      f"{_fmt_time(event.elapsed)}; best val loss {best}.\ncheckpoints: {out}/best, {out}/last "
                      f"(resume with --resume {out})")
                return _exit_code(event, received)
    except KeyboardInterrupt:  # a second Ctrl-C, while the first was stopping the run
        print(f"\ninterrupted before the last checkpoint was saved; --resume {out} continues from the newest "
              "one", file=sys.stderr)
        return 130
    finally:
        events.close()  # the trackers finish now, not whenever the generator is collected
        if bar is not None:
            bar.close()
    return 1


def _exit_code(done, received: list) -> int:
    if done.status in ("failed", "diverged"):
        return 1
    # A run ended by a signal exits as a killed process would (128 + the signal's number).
    return 128 + received[0] if received and done.status == "stopped" else 0


def _checkpoint_folder(path: str) -> Path:
    """A checkpoint folder, or a run folder standing for its best checkpoint (else its last)."""
    from gptlab.runfolder import BEST, resolve_checkpoint

    return resolve_checkpoint(path, prefer=BEST)


def _sample_config(args) -> SampleConfig:
    values = _overrides(args, SampleConfig)
    beams = values.get("num_beams", 1)
    if isinstance(beams, int) and beams > 1 and "strategy" not in values:
        values["strategy"] = "beam"
    return SampleConfig(**values)


def cmd_sample(args) -> int:
    from gptlab.checkpoint import load_checkpoint
    from gptlab.generate import generate
    from gptlab.textstream import stream_text
    from gptlab.tokenizers import prompt_ids
    from gptlab.trainer import pick_device

    checkpoint = load_checkpoint(_checkpoint_folder(args.checkpoint))
    config = _sample_config(args)
    tokenizer = checkpoint.tokenizer
    start = prompt_ids(tokenizer, args.prompt)
    model = checkpoint.load_model(pick_device(args.device))
    sys.stdout.write(args.prompt)
    ids = generate(model, start, config, eot=tokenizer.eot)
    for piece in stream_text(ids, tokenizer, stop=config.stop):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def cmd_presets(args) -> int:
    if args.batch_size is not None and args.batch_size < 1 or args.vocab_size < 1:
        raise ValueError("--batch-size and --vocab-size must be positive whole numbers.")
    print(f"{'preset':<12} {'tokenizer':<9} {'shape (layers x heads x width, context)':<40} {'params':>8} "
          f"{'train memory':>14}  description")
    for name, p in PRESETS.items():
        train = TrainConfig.preset(name)
        vocab = 50257 if train.tokenizer == "gpt2" else args.vocab_size
        model = ModelConfig.preset(name, vocab_size=vocab)
        batch = args.batch_size or train.batch_size
        shape = f"{model.n_layer} x {model.n_head} x {model.n_embd}, {model.block_size}"
        memory = f"{model.training_memory_bytes(batch) / 2**20:,.0f} MiB @ {batch}"
        print(f"{name:<12} {train.tokenizer:<9} {shape:<40} {model.num_params() / 1e6:>7.2f}M {memory:>14}  "
              f"{p.description}")
    return 0


def cmd_info(args) -> int:
    from gptlab.checkpoint import load_checkpoint

    ck = load_checkpoint(_checkpoint_folder(args.checkpoint))
    params = ck.model_config.num_params()
    print(f"checkpoint: {ck.path}")
    print(f"step: {ck.step}    resumable: {'yes' if ck.resumable else 'no'}")
    print(f"parameters: {params:,} ({params / 1e6:.2f}M)    tokenizer: {ck.tokenizer.name} "
          f"({ck.tokenizer.vocab_size} tokens)")
    print("model: " + json.dumps(to_dict(ck.model_config)))
    if ck.train_config:
        print("train: " + json.dumps(to_dict(ck.train_config)))
    if ck.metrics:
        shown = {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in ck.metrics.items()}
        print("metrics: " + json.dumps(shown))
    if ck.extra.get("distributed", {}).get("world_size", 1) > 1:
        print("distributed: " + json.dumps(ck.extra["distributed"]))
    if ck.extra.get("data"):
        print("data: " + json.dumps({k: v for k, v in ck.extra["data"].items() if k != "paths"}))
    return 0


def cmd_import(args) -> int:
    from gptlab.hub import import_pretrained

    out = import_pretrained(args.model, args.out)
    print(f"imported {args.model} into {out}")
    return 0


def cmd_export(args) -> int:
    if args.format == "gguf":
        from gptlab.gguf_export import DEFAULT_DTYPE, export_gguf, how_to_run

        folder = _checkpoint_folder(args.checkpoint)
        print(how_to_run(export_gguf(folder, args.out, dtype=args.dtype or DEFAULT_DTYPE), folder))
        return 0
    if args.dtype:
        raise ValueError("--dtype chooses the weights of a GGUF file (--format gguf); a Hugging Face export keeps "
                         "the checkpoint's float32 weights.")
    from gptlab.hub import export_hf

    out = export_hf(_checkpoint_folder(args.checkpoint), args.out)
    print(f"exported {args.checkpoint} to {out} (loadable with transformers.GPT2LMHeadModel.from_pretrained)")
    return 0


def cmd_push(args) -> int:
    from gptlab.hub import push_to_hub

    url = push_to_hub(_checkpoint_folder(args.checkpoint), args.repo_id, token=args.token, private=args.private)
    print(f"pushed to {url}")
    return 0


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "info": cmd_info, "runs": cli_runs.cmd_runs,
            "sweep": cli_runs.cmd_sweep, "presets": cmd_presets, "import": cmd_import, "export": cmd_export,
            "push": cmd_push}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly, as other tools do
        sys.stdout = open(os.devnull, "w")
        return 0
    except (ValueError, OSError) as e:  # our errors are ValueErrors with sentences; OSErrors name the file
        message = " ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
