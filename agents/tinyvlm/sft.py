"""``medvr sft``: supervised warm start of the tiny VLM on VQA-RAD train and the procedural train split.

    medvr sft --bundled                         # build the bundled agent from scratch into $MEDVR_CACHE/tinyvlm
                                                # (phases: BUNDLED_PHASES)
    medvr sft --out runs/sft --boxes random     # no grounding taught (zoom boxes drawn at random)
    medvr sft --out runs/sft --resume           # continue from runs/sft/checkpoint

Trajectories are rendered by the policy's own conversation code (:mod:`agents.tinyvlm.sft_data`); the loss is the
cross-entropy of the scripted turns' tokens only. The encoder is frozen, so every image is encoded once and training
runs on cached feature grids. Every example in a batch starts with the same system prompt, so a batch is one forward
over a small prefix tree: the system prompt once, each distinct first image once (on top of it), then each example's
own tokens (on top of its image), with gradients through all three.

Writes ``OUT/checkpoint`` (model, processor and trainer state, replaced atomically every ``--save-every`` steps),
``OUT/model`` (the final model), ``OUT/history.json`` and ``OUT/learning_curve.png``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from agents.runner import unwritable_folder, write_atomic, write_json

from .build import build_model, bundled_path, cache_root, save_checkpoint
from .sft_data import (
    BOX_SOURCES,
    RENDER_VERSION,
    EpisodeRenderer,
    Example,
    FeatureStore,
    RenderedSet,
    render_procedural,
    render_vqa,
)

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"


@dataclass
class SFTConfig:
    """Everything that decides an SFT run (saved with its checkpoints)."""

    epochs: float = 4.0
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: float = 0.03
    boxes: str = "eval"
    vqa_rad: bool = True
    data_root: str | None = None
    procedural: int = 240
    no_tools_fraction: float = 0.25
    seed: int = 0
    save_every: int = 200
    max_steps: int | None = None
    ema: float = 0.0  # decay of an exponential moving average of the weights (0: off); the final model is the average

    def data_key(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("boxes", "vqa_rad", "data_root", "procedural", "no_tools_fraction",
                                             "seed")}


# ---------------------------------------------------------------------------------------------- data
def render_dataset(model: Any, processor: Any, cfg: SFTConfig, progress: bool = True,
                   store: FeatureStore | None = None) -> tuple[list[Example], FeatureStore]:
    """Render every training episode and encode its images (see :mod:`agents.tinyvlm.sft_data`)."""
    from medvr_env.data.procedural import ProceduralDataset
    from medvr_env.data.vqa_rad import VQARADDataset

    renderer = EpisodeRenderer(model, processor)
    out = RenderedSet()
    if cfg.vqa_rad:
        render_vqa(renderer, VQARADDataset(split="train", data_root=cfg.data_root), out, "vqa_rad", progress)
    if cfg.procedural:
        render_procedural(renderer, ProceduralDataset(split="train", num_samples=cfg.procedural, seed=cfg.seed), out,
                          boxes=cfg.boxes, no_tools_fraction=cfg.no_tools_fraction, seed=cfg.seed,
                          progress=progress)
    if not out.examples:
        raise ValueError("no training data: enable VQA-RAD (needs the dataset) or procedural samples")
    store = store or FeatureStore()
    store.encode(model, out.images, processor, progress=progress)
    store.features = {k: store.features[k] for k in out.images}
    return out.examples, store


def make_batches(examples: Sequence[Example], image_token_id: int, batch_size: int,
                 rng: random.Random) -> list[list[int]]:
    """Shuffled batches of example indices; each batch shares one system prompt (computed once in the forward).

    Examples are drawn at random, not grouped by image: batches of questions about one or two images made
    consecutive updates pull towards one image's answers, and learning stalled (VQA-RAD train accuracy 27 % after
    three epochs, against 67 % with random batches; see docs/tinyvlm.md).
    """
    by_system: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        by_system[tuple(ex.ids[:ex.first_image(image_token_id)])].append(i)
    batches: list[list[int]] = []
    for group in by_system.values():
        group = list(group)
        rng.shuffle(group)
        batches += [group[s:s + batch_size] for s in range(0, len(group), batch_size)]
    rng.shuffle(batches)
    return batches


# ---------------------------------------------------------------------------------------------- loss
def _cache_from(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=pairs)


def _pairs(out: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    cache = getattr(out, "cache", None)
    if cache is None:
        cache = out.past_key_values
    return [(layer.keys, layer.values) for layer in cache.layers]


def batch_loss(model: Any, batch: Sequence[Example], store: FeatureStore) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy of the target tokens of ``batch`` (one prefix-tree forward; see the module docstring)."""
    cfg = model.config
    image_id, n_img = cfg.image_token_id, cfg.image_seq_len
    decoder, head = model.decoder, model.lm_head
    dev = next(model.parameters()).device
    p = batch[0].first_image(image_id)
    for ex in batch:
        if ex.first_image(image_id) != p or ex.ids[:p] != batch[0].ids[:p]:
            raise ValueError("a batch must share its system prompt (make_batches groups them)")
        if ex.ids[p:p + n_img] != [image_id] * n_img:
            raise ValueError(f"example {ex.sample_id}: its first image is not {n_img} placeholders")
    # level 1: the system prompt, once
    out = decoder(input_ids=torch.tensor([batch[0].ids[:p]], device=dev), use_cache=True)
    # level 2: each distinct first image, on top of the system prompt
    firsts = list(dict.fromkeys(ex.images[0] for ex in batch))
    g = len(firsts)
    pairs = [(k.expand(g, -1, -1, -1), v.expand(g, -1, -1, -1)) for k, v in _pairs(out)]
    ids_b = torch.full((g, n_img), image_id, dtype=torch.long, device=dev)
    emb_b = model.embed(ids_b, image_features=store.stack(firsts).to(dev))
    pos_b = torch.arange(p, p + n_img, device=dev).expand(g, -1)
    out = decoder(inputs_embeds=emb_b, attention_mask=torch.ones(g, p + n_img, dtype=torch.long, device=dev),
                  position_ids=pos_b, cache=_cache_from(pairs), use_cache=True)
    # level 3: each example's own tokens, on top of its first image
    which = torch.tensor([firsts.index(ex.images[0]) for ex in batch], device=dev)
    pairs = [(k.index_select(0, which), v.index_select(0, which)) for k, v in _pairs(out)]
    start = p + n_img
    rest = [ex.ids[start:] for ex in batch]
    s = max(len(r) for r in rest)
    pad = model.config.text_config.pad_token_id or 0
    ids_c = torch.full((len(batch), s), pad, dtype=torch.long)
    mask_c = torch.zeros((len(batch), s), dtype=torch.long)
    targets = torch.zeros((len(batch), s), dtype=torch.bool)
    for i, (ex, r) in enumerate(zip(batch, rest)):
        ids_c[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask_c[i, :len(r)] = 1
        targets[i, :len(r)] = torch.tensor(ex.target[start:], dtype=torch.bool)
    later = [k for ex in batch for k in ex.images[1:]]
    emb_c = model.embed(ids_c.to(dev), image_features=store.stack(later).to(dev) if later else None)
    mask = torch.cat([torch.ones(len(batch), start, dtype=torch.long), mask_c], dim=1).to(dev)
    pos_c = torch.arange(start, start + s, device=dev).expand(len(batch), -1)
    hidden = decoder(inputs_embeds=emb_c, attention_mask=mask, position_ids=pos_c, cache=_cache_from(pairs),
                     use_cache=True).last_hidden_state
    if targets[:, 0].any():
        raise ValueError("a target token directly after the first image is not supported")
    # the hidden state at j predicts token j + 1
    sel = targets[:, 1:].to(dev)
    logits = head(hidden[:, :-1][sel])
    labels = ids_c[:, 1:].to(dev)[sel]
    n = int(labels.numel())
    if n == 0:
        raise ValueError("a batch without target tokens")
    return torch.nn.functional.cross_entropy(logits.float(), labels), n


# ---------------------------------------------------------------------------------------------- training
@dataclass
class History:
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # this process's CPU time (all threads): the cost on an idle machine


def lr_at(step: int, total: int, cfg: SFTConfig) -> float:
    warm = max(1, int(cfg.warmup * total))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def plot_curve(history: History, path: Path) -> None:
    """The learning curve (loss per step and its moving average) as a PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(history.steps, history.loss, color="0.75", lw=0.8, label="batch loss")
    if len(history.loss) >= 5:
        k = max(5, len(history.loss) // 40)
        smooth = np.convolve(history.loss, np.ones(k) / k, mode="valid")
        ax.plot(history.steps[k - 1:], smooth, color="C0", lw=1.8, label=f"moving average ({k} steps)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy of target tokens")
    ax.set_yscale("log")
    ax.set_title("Tiny VLM supervised warm start")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    write_atomic(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)


def train(out_dir: str | os.PathLike, cfg: SFTConfig, *, init: str | None = None, size: str = "bundled",
          resume: bool = False, progress: bool = True) -> Path:
    """Run SFT into ``out_dir``; returns the final model's folder (``out_dir/model``)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if cfg.boxes not in BOX_SOURCES:
        raise ValueError(f"--boxes must be one of {BOX_SOURCES}, got {cfg.boxes!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint"
    state: dict[str, Any] | None = None
    if resume and (ckpt / STATE_FILE).is_file():
        model = AutoModelForImageTextToText.from_pretrained(ckpt)
        processor = AutoProcessor.from_pretrained(ckpt)
        state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=False)
        log.info("resuming from %s at step %d", ckpt, state["step"])
    elif resume:
        raise FileNotFoundError(f"--resume: no checkpoint in {ckpt}; start without --resume")
    elif init:
        model = AutoModelForImageTextToText.from_pretrained(init)
        processor = AutoProcessor.from_pretrained(init)
    else:
        model, processor = build_model(None, size=size, vqa_rad_root=cfg.data_root, seed=cfg.seed)
    examples, store = _load_or_render(out, model, processor, cfg, progress)
    counts: dict[str, int] = defaultdict(int)
    for ex in examples:
        counts[ex.source] += 1
    print(f"SFT data: {dict(counts)}; {len(store)} distinct images encoded", file=sys.stderr)

    torch.manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    image_id = model.config.image_token_id
    per_epoch = len(make_batches(examples, image_id, cfg.batch_size, random.Random(cfg.seed)))
    total = max(1, int(round(cfg.epochs * per_epoch)))
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    history = History()
    step = 0
    average = WeightAverage(params, cfg.ema) if cfg.ema else None
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        history = History(**state["history"])
        step = int(state["step"])
        if average is not None and state.get("ema") is not None:
            average.load(state["ema"])
    model.train()
    bar = tqdm(total=total, initial=step, desc="sft", disable=not progress, dynamic_ncols=True)
    started = time.time() - history.seconds
    cpu_started = time.process_time() - history.cpu_seconds
    epoch_losses: list[float] = []
    try:
        while step < total:
            epoch, offset = divmod(step, per_epoch)
            batches = make_batches(examples, image_id, cfg.batch_size, random.Random(cfg.seed * 1000 + epoch))
            for idx in batches[offset:]:
                if step >= total:
                    break
                lr = lr_at(step, total, cfg)
                for group in opt.param_groups:
                    group["lr"] = lr
                loss, _ = batch_loss(model, [examples[i] for i in idx], store)
                if not torch.isfinite(loss):
                    log.warning("step %d: non-finite loss, batch skipped", step)
                    opt.zero_grad(set_to_none=True)
                    step += 1
                    continue
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                step += 1
                if average is not None:
                    average.update(step)
                value = float(loss.detach())
                history.steps.append(step)
                history.loss.append(value)
                history.lr.append(lr)
                epoch_losses.append(value)
                bar.update(1)
                bar.set_postfix(loss=f"{value:.3f}", epoch=f"{step / per_epoch:.2f}")
                if step % per_epoch == 0:
                    history.epoch_loss.append(float(np.mean(epoch_losses)))
                    epoch_losses = []
                if cfg.save_every and step % cfg.save_every == 0 and step < total:
                    history.seconds = time.time() - started
                    history.cpu_seconds = time.process_time() - cpu_started
                    _save(model, processor, ckpt, opt, step, history, cfg, out, average)
    finally:
        bar.close()
    history.seconds = time.time() - started
    history.cpu_seconds = time.process_time() - cpu_started
    _save(model, processor, ckpt, opt, step, history, cfg, out, average)
    model.eval()
    if average is not None:
        average.copy_to(params)
    final = save_checkpoint(model, processor, out / "model")
    print(f"SFT done: {step} steps in {history.seconds / 60:.1f} min ({history.cpu_seconds / 60:.1f} CPU-min), last loss {np.mean(history.loss[-20:]):.3f}; "
          f"model: {final}", file=sys.stderr)
    return final


class WeightAverage:
    """Exponential moving average of the trainable weights, with the usual short-run correction: the decay at
    step ``t`` is ``min(decay, (1 + t) / (10 + t))``, so early steps are not averaged with the random start."""

    def __init__(self, params: Sequence[torch.nn.Parameter], decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"--ema must be in (0, 1), got {decay}")
        self.params, self.decay = list(params), decay
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for avg, p in zip(self.shadow, self.params):
            avg.lerp_(p.detach(), 1.0 - decay)

    @torch.no_grad()
    def copy_to(self, params: Sequence[torch.nn.Parameter]) -> None:
        for avg, p in zip(self.shadow, params):
            p.copy_(avg)

    def state(self) -> list[torch.Tensor]:
        return [t.clone() for t in self.shadow]

    def load(self, tensors: Sequence[torch.Tensor]) -> None:
        if len(tensors) != len(self.shadow):
            raise ValueError("the checkpoint's weight average does not match this model's parameters")
        self.shadow = [t.clone() for t in tensors]


def _save(model: Any, processor: Any, ckpt: Path, opt: Any, step: int, history: History, cfg: SFTConfig,
          out: Path, average: WeightAverage | None = None) -> None:
    state = {"optimizer": opt.state_dict(), "step": step, "history": asdict(history), "config": asdict(cfg),
             "ema": average.state() if average is not None else None}
    was_training = model.training
    save_checkpoint(model, processor, ckpt, extra={STATE_FILE: state})
    model.train(was_training)
    write_json(out / "history.json", {"config": asdict(cfg), **asdict(history)})
    plot_curve(history, out / "learning_curve.png")


def _load_or_render(out: Path, model: Any, processor: Any, cfg: SFTConfig,
                    progress: bool) -> tuple[list[Example], FeatureStore]:
    """Rendered episodes and image features, cached in ``out/data.pt`` for the same data settings and tokenizer."""
    path = out / "data.pt"
    key = {**cfg.data_key(), "render": RENDER_VERSION, "vocab": len(processor.tokenizer),
           "image_size": model.config.image_size,
           "tokenizer": processor.tokenizer.backend_tokenizer.to_str()[:2000] if hasattr(
               processor.tokenizer, "backend_tokenizer") else ""}
    known: dict[str, torch.Tensor] = {}
    if path.is_file():
        data = torch.load(path, map_location="cpu", weights_only=False)
        if data.get("key") == key:
            return [Example(**e) for e in data["examples"]], FeatureStore(data["features"])
        if data.get("key", {}).get("image_size") == key["image_size"]:
            known = data["features"]  # features are keyed by image content: still valid for the frozen encoder
    examples, store = render_dataset(model, processor, cfg, progress, FeatureStore(known))
    data = {"key": key, "examples": [asdict(e) for e in examples], "features": store.features}
    write_atomic(path, lambda fh: torch.save(data, fh))
    return examples, store


# ---------------------------------------------------------------------------------------------- bundled recipe
# The bundled agent: one phase of small random batches (16), 20 epochs, cosine decay, and the moving average of the
# weights as the final model. VQA-RAD test, all 451 questions (docs/tinyvlm.md): 61.0 % (the raw final weights
# 60.5 %); the same recipe before answers were written in one spelling, 57.9 %. The first recipe (batches grouped by
# image, three phases, ~900 steps, 4 layers) stopped at 36.1 %.
BUNDLED_PHASES: tuple[dict[str, float], ...] = (
    {"epochs": 20.0, "batch_size": 16, "lr": 1e-3, "ema": 0.998},
)


def build_bundled(out_dir: str | os.PathLike, cfg: SFTConfig, *, resume: bool = False,
                  progress: bool = True) -> Path:
    """Every phase of :data:`BUNDLED_PHASES` into ``out_dir`` (earlier phases in ``out_dir/phase<i>``), each
    starting from the previous phase's model; returns the final model's folder."""
    import shutil

    out = Path(out_dir)
    init: str | None = None
    for i, phase in enumerate(BUNDLED_PHASES, start=1):
        here = out if i == len(BUNDLED_PHASES) else out / f"phase{i}"
        if i < len(BUNDLED_PHASES) and (here / "model" / "config.json").is_file():
            init = str(here / "model")  # finished earlier (a resumed build)
            continue
        here.mkdir(parents=True, exist_ok=True)
        first = out / "phase1" / "data.pt"
        if i > 1 and not (here / "data.pt").is_file() and first.is_file():
            shutil.copy2(first, here / "data.pt")  # same episodes, same tokenizer: no re-rendering
        final = train(here, replace(cfg, **phase), init=init, size="bundled",
                      resume=resume and (here / "checkpoint").is_dir(), progress=progress)
        init = str(final)
    return Path(init)


# ---------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medvr sft", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundled", action="store_true",
                   help="build the bundled agent from scratch into $MEDVR_CACHE/tinyvlm (default ~/.cache/medvr) with "
                        "its phased recipe (--epochs/--batch-size/--lr are the recipe's); "
                        "`medvr run --agent tiny` uses it")
    p.add_argument("--out", default=None, help="output folder (default: runs/sft_<time>, or the cache with --bundled)")
    p.add_argument("--init", default=None, help="start from this checkpoint instead of a new model")
    p.add_argument("--size", default="bundled", choices=["bundled", "test"], help="shape of a new model")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--boxes", default="eval", choices=list(BOX_SOURCES),
                   help="zoom boxes of the procedural trajectories: the evaluation boxes, or random (no grounding)")
    p.add_argument("--epochs", type=float, default=SFTConfig.epochs)
    p.add_argument("--batch-size", type=int, default=SFTConfig.batch_size)
    p.add_argument("--lr", type=float, default=SFTConfig.lr)
    p.add_argument("--procedural", type=int, default=SFTConfig.procedural, help="procedural train samples (0: none)")
    p.add_argument("--no-tools-fraction", type=float, default=SFTConfig.no_tools_fraction,
                   help="share of procedural episodes played with no tools offered")
    p.add_argument("--no-vqa-rad", action="store_true", help="leave VQA-RAD train out")
    p.add_argument("--data-root", default=None, help="VQA-RAD folder (default: the usual search, $MEDVR_DATA/vqa_rad)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=SFTConfig.save_every, help="checkpoint every N steps")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps")
    p.add_argument("--ema", type=float, default=SFTConfig.ema,
                   help="keep an exponential moving average of the weights with this decay (e.g. 0.999) and save it "
                        "as the final model (default 0: off)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = SFTConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, boxes=args.boxes,
                    vqa_rad=not args.no_vqa_rad, data_root=args.data_root, procedural=args.procedural,
                    no_tools_fraction=args.no_tools_fraction, seed=args.seed, save_every=args.save_every,
                    max_steps=args.max_steps, ema=args.ema)
    if (args.batch_size < 1 or args.epochs <= 0 or not 0 <= args.no_tools_fraction <= 1 or args.procedural < 0
            or not 0 <= args.ema < 1):
        print("error: --batch-size >= 1, --epochs > 0, --procedural >= 0, --no-tools-fraction in [0, 1] and --ema "
              "in [0, 1)", file=sys.stderr)
        return 2
    out = args.out or (str(cache_root() / "tinyvlm") if args.bundled else f"runs/sft_{time.strftime('%Y%m%d-%H%M%S')}")
    if args.init and not (Path(args.init) / "config.json").is_file():
        print(f"error: --init {args.init}: no checkpoint there (a folder with config.json)", file=sys.stderr)
        return 2
    problem = unwritable_folder(out)
    if problem:  # found now, not after the data is rendered and the model trained
        print(f"error: --out {out}: {problem}", file=sys.stderr)
        return 2
    from medvr_env.data.files import DatasetNotFoundError

    try:
        if args.bundled:
            final = build_bundled(out, cfg, resume=args.resume, progress=not args.no_progress)
        else:
            final = train(out, cfg, init=args.init, size=args.size, resume=args.resume,
                          progress=not args.no_progress)
    except (DatasetNotFoundError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.bundled and Path(final) != bundled_path():
        print(f"note: the bundled agent is read from {bundled_path()}", file=sys.stderr)
    print(final)
    return 0


__all__ = ["BUNDLED_PHASES", "SFTConfig", "batch_loss", "build_bundled", "build_parser", "main", "make_batches", "render_dataset", "train"]
