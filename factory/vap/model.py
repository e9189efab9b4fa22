"""The smoke-train's VAP model and its training (torch environment, CPU): per channel, the token
ids of a model frame embedded and projected, both channels concatenated into a stack of causal
dilated convolutions (5 s of context; on 1-2 CPU threads a convolution trains many times faster
than a recurrent layer), a linear head giving the 8 bin logits of `factory.vap.measures`. Small on
purpose (under 100K parameters): it checks that the data carries learnable turn-taking, not how
well a large model does. Seeded and run with deterministic algorithms on `threads` threads, so the
same export, seed and thread count give the same numbers (another thread count sums in another
order: a 20-step model's weights differ by 3e-4). One thread by default: on a shared 2-core machine
two threads wait on each other (at load 2-4 a training step took 5-9x as long with 2 threads as
with 1, benchmarks/results/smoke_train.md)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from factory.vap.data import Dialogue, Streams
from factory.vap.measures import BIN_FRAMES, targets

KERNEL, DILATIONS = 3, (1, 2, 4, 8, 16)  # receptive field 63 frames (5 s at 12.5 Hz)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 400
    batch: int = 16
    window: int = 250  # frames (20 s)
    lr: float = 3e-3
    embed: int = 12
    hidden: int = 64
    seed: int = 0
    threads: int = 1


class VAP(nn.Module):
    def __init__(self, vocab: int, slots: int, embed: int, hidden: int) -> None:
        super().__init__()
        self.vocab, self.slots = vocab, slots
        self.embed = nn.ModuleList([nn.Embedding(vocab * slots, embed) for _ in range(2)])
        self.proj = nn.ModuleList([nn.Linear(embed * slots, hidden // 2) for _ in range(2)])
        self.convs = nn.ModuleList([nn.Conv1d(hidden, hidden, KERNEL, dilation=d) for d in DILATIONS])
        self.head = nn.Linear(hidden, 2 * len(BIN_FRAMES))
        self.register_buffer("offsets", torch.arange(slots) * vocab, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, 2, T, slots) -> logits (B, T, 2, 4)."""
        chans = []
        for ch in range(2):
            e = self.embed[ch](tokens[:, ch] + self.offsets)  # (B, T, slots, embed)
            chans.append(torch.relu(self.proj[ch](e.flatten(2))))
        x = torch.cat(chans, -1).transpose(1, 2)  # (B, hidden, T)
        for conv in self.convs:  # causal: padded on the left only, frame t sees frames <= t
            pad = (KERNEL - 1) * conv.dilation[0]
            x = x + torch.relu(conv(nn.functional.pad(x, (pad, 0))))
        return self.head(x.transpose(1, 2)).view(tokens.shape[0], tokens.shape[2], 2, len(BIN_FRAMES))


@contextmanager
def _seeded(cfg: TrainConfig) -> Iterator[None]:
    """Seeded, deterministic algorithms, `cfg.threads` threads; the process's settings restored
    after (a test session or a caller keeps its own)."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def train(streams: Streams, dialogues: list[Dialogue], cfg: TrainConfig) -> VAP:
    """Train on random `cfg.window`-frame crops of `dialogues` (a dialogue shorter than the window
    is padded, its padding masked out of the loss)."""
    with _seeded(cfg):
        rng = np.random.default_rng(cfg.seed)
        model = VAP(streams.vocab, streams.slots, cfg.embed, cfg.hidden)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        prepared = [(d.tokens, *targets(d.activity)) for d in dialogues]
        weights = np.array([t.shape[1] for t, _, _ in prepared], np.float64)
        weights /= weights.sum()
        w = cfg.window
        model.train()
        for _ in range(cfg.steps):
            tok = np.full((cfg.batch, 2, w, streams.slots), streams.pad, np.int64)
            tgt = np.zeros((cfg.batch, w, 2, len(BIN_FRAMES)), np.float32)
            mask = np.zeros((cfg.batch, w), np.float32)
            for b, i in enumerate(rng.choice(len(prepared), cfg.batch, p=weights)):
                tokens, target, valid = prepared[i]
                n = tokens.shape[1]
                start = int(rng.integers(0, max(n - w, 0) + 1))
                m = min(w, n - start)
                tok[b, :, :m] = tokens[:, start : start + m]
                tgt[b, :m], mask[b, :m] = target[start : start + m], valid[start : start + m]
            logits = model(torch.from_numpy(tok))
            loss = nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(tgt), reduction="none")
            m_t = torch.from_numpy(mask)
            loss = (loss.mean((-1, -2)) * m_t).sum() / m_t.sum().clamp(min=1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


def project(model: VAP, dialogues: list[Dialogue], cfg: TrainConfig) -> list[np.ndarray]:
    """Each dialogue's (T, 2, 4) projected activity, the whole dialogue in one causal pass."""
    model.eval()
    out: list[np.ndarray] = []
    with _seeded(cfg), torch.no_grad():
        for d in dialogues:
            logits: Any = model(torch.from_numpy(d.tokens[None]))
            out.append(torch.sigmoid(logits)[0].numpy())
    return out
