"""The anchor of the quality benchmark: nanoGPT's CPU "baby GPT" recipe, trained in the same run on the same machine.

nanoGPT's README trains a small character-level GPT-2 on TinyShakespeare on a CPU with
`config/train_shakespeare_char.py --device=cpu --compile=False --block_size=64 --batch_size=12 --n_layer=4
--n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0` and reports about 1.88 val loss.
`NANOGPT_CPU` is that recipe. The model is `transformers`' `GPT2LMHeadModel` (a reference we did not write) and the
loop is our own short one (Chapter 6's `get_batch`, `lr_at`, `train_step` and `evaluate`), with nanoGPT's
optimizer choices: AdamW, betas (0.9, 0.99), weight decay 0.1 on every parameter with >= 2 dimensions (nanoGPT
decays the embeddings too) and none on biases and LayerNorm gains, gradient clipping at 1.0.

Known differences from nanoGPT itself, all small: `GPT2LMHeadModel` has biases (nanoGPT's recipe sets bias=False),
and our warmup is lr * (step + 1) / 100 where nanoGPT's is lr * (step + 1) / 101. The loss is our full
validation pass (every validation character predicted once, in windows of 64), not nanoGPT's random estimate;
with one token per character, nats per token are nats per character.
"""

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llama_nb.batches import evaluate, get_batch
from llama_nb.data import train_val_split
from llama_nb.optim import lr_at, train_step


@dataclass(frozen=True)
class BaselineRecipe:
    "nanoGPT's CPU baby GPT (see the module docstring); every field is the value nanoGPT's command line sets."

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64  # context length, in characters
    batch_size: int = 12
    max_iters: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-4  # end of the cosine decay, at max_iters (lr_decay_iters = max_iters)
    warmup_iters: int = 100
    beta1: float = 0.9
    beta2: float = 0.99
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    dropout: float = 0.0
    seed: int = 1337


NANOGPT_CPU = BaselineRecipe()
NANOGPT_REPORTED = 1.88  # nanoGPT's README for this recipe (its own random-window estimate of the val loss)


@dataclass
class CharData:
    "TinyShakespeare as character ids: the vocabulary (every distinct character of the text, 65) and both splits."

    chars: str
    train_ids: torch.Tensor  # (N_train,)
    val_ids: torch.Tensor  # (N_val,)


def char_data(text: str, train_fraction: float = 0.9) -> CharData:
    "nanoGPT's `prepare.py` for shakespeare_char: the sorted set of the characters, and the 90 %/10 % split."
    chars = "".join(sorted(set(text)))
    index = {c: i for i, c in enumerate(chars)}
    train_text, val_text = train_val_split(text, train_fraction)  # the split every chapter uses

    def encode(s: str) -> torch.Tensor:
        return torch.tensor([index[c] for c in s], dtype=torch.long)

    return CharData(chars, encode(train_text), encode(val_text))


class CharGPT2(nn.Module):
    """`GPT2LMHeadModel` with the (logits, loss) interface of our `Llama`, so that Chapter 6's `train_step` and
    `evaluate` drive it unchanged."""

    def __init__(self, vocab_size: int, recipe: BaselineRecipe = NANOGPT_CPU):
        super().__init__()
        import transformers  # a dev dependency, needed only by the benchmarks and the tests

        transformers.logging.set_verbosity_error()
        config = transformers.GPT2Config(
            vocab_size=vocab_size,
            n_positions=recipe.block_size,
            n_embd=recipe.n_embd,
            n_layer=recipe.n_layer,
            n_head=recipe.n_head,
            resid_pdrop=recipe.dropout,
            embd_pdrop=recipe.dropout,
            attn_pdrop=recipe.dropout,
            activation_function="gelu",  # nanoGPT's nn.GELU (exact), not GPT-2's tanh approximation
            tie_word_embeddings=True,
        )  # as nanoGPT: the output matrix is the token embedding
        self.gpt = transformers.GPT2LMHeadModel(config)

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None):
        logits = self.gpt(input_ids=x, use_cache=False).logits  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        return logits, loss


def nanogpt_optimizer(model: nn.Module, recipe: BaselineRecipe = NANOGPT_CPU) -> torch.optim.AdamW:
    """nanoGPT's `configure_optimizers`: weight decay on every parameter with >= 2 dimensions (matrices and both
    embeddings), none on the rest (biases, LayerNorm gains). A tied tensor is listed once."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": recipe.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=recipe.lr, betas=(recipe.beta1, recipe.beta2))


@dataclass
class BaselineResult:
    steps: int
    train_seconds: float  # wall time of the training steps only (as `train`'s train_seconds)
    val_nats_per_char: float
    params: int
    vocab_size: int
    last_loss: float


def train_baseline(
    data: CharData,
    recipe: BaselineRecipe = NANOGPT_CPU,
    max_iters: int | None = None,
    meter: AbstractContextManager | None = None,
    stop: Callable[[int], bool] | None = None,
) -> BaselineResult:
    """Train `CharGPT2` with `recipe` for `max_iters` steps (default: the recipe's), timing the steps only (inside
    `meter`, e.g. a `CpuMeter`, if given), then score it with one full pass over the validation characters.
    `stop(steps_done)`, if given, is asked after each step; True ends the training there (fewer steps)."""
    iters = recipe.max_iters if max_iters is None else max_iters
    torch.manual_seed(recipe.seed)
    model = CharGPT2(len(data.chars), recipe).train()
    optimizer = nanogpt_optimizer(model, recipe)
    gen = torch.Generator().manual_seed(recipe.seed)
    next_batch = lambda: get_batch(data.train_ids, recipe.batch_size, recipe.block_size, gen)
    loss, steps = float("nan"), 0
    with meter if meter is not None else nullcontext():
        t0 = time.perf_counter()
        for step in range(iters):
            # The schedule always spans the recipe's 2,000 iterations: a short run is a prefix of the full one.
            lr = lr_at(step, recipe.lr, recipe.min_lr, recipe.warmup_iters, recipe.max_iters)
            loss, _ = train_step(model, optimizer, next_batch, lr, grad_clip=recipe.grad_clip)
            steps = step + 1
            if stop is not None and stop(steps):
                break
        train_seconds = time.perf_counter() - t0
    n_chars = len(data.val_ids) - 1  # one token per character; the first is context only
    ev = evaluate(model, data.val_ids, n_chars, recipe.block_size)
    params = sum(p.numel() for p in model.parameters())
    return BaselineResult(steps, train_seconds, ev["nats_per_char"], params, len(data.chars), loss)
