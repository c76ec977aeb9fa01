"""A synthetic text task whose right answer is known, and a small transformer trained on it.

Shared by ``tutorials/07_text.ipynb`` and ``benchmarks/bench_text.py``; not part of the library.

Every sentence has 12-16 real words, padded to 16 with ``[pad]``. One to three of them are *trigger* words, positive
("good", "great", ...) or negative ("bad", "awful", ...); the others are filler ("the", "movie", ...) that plays no
part in the label. The label is 1 when the sentence has more positive than negative triggers and 0 otherwise (a tie
is never drawn). So only the trigger words decide the label, and a per-token explanation of the model's output should
put its weight on them.

>>> data = make_sentences(4, torch.Generator().manual_seed(0))
>>> data.ids.shape, data.attention_mask.shape, data.labels.shape, data.triggers.shape
(torch.Size([4, 16]), torch.Size([4, 16]), torch.Size([4]), torch.Size([4, 16]))
>>> bool((data.triggers.sum(1) >= 1).all()) and bool((data.ids[data.attention_mask == 0] == PAD).all())
True
"""

from typing import NamedTuple, Sequence

import torch
from torch import Tensor, nn

PAD = 0
POSITIVE = ("good", "great", "superb", "fine")
NEGATIVE = ("bad", "awful", "dull", "poor")
FILLER = ("the", "a", "movie", "film", "plot", "was", "is", "and", "it", "this",
          "actor", "story", "very", "quite", "with", "of", "to", "in", "ending", "music")
VOCAB = ("[pad]",) + POSITIVE + NEGATIVE + FILLER
LENGTH, MIN_LENGTH = 16, 12

_POSITIVE_IDS = torch.tensor([VOCAB.index(w) for w in POSITIVE])
_NEGATIVE_IDS = torch.tensor([VOCAB.index(w) for w in NEGATIVE])
_FILLER_IDS = torch.tensor([VOCAB.index(w) for w in FILLER])


class Sentences(NamedTuple):
    """A batch of sentences: token ids, the attention mask (1 = real word), labels, and where the triggers are."""

    ids: Tensor  # (n, LENGTH) int64, PAD after the real words
    attention_mask: Tensor  # (n, LENGTH) int64
    labels: Tensor  # (n,) int64
    triggers: Tensor  # (n, LENGTH) bool: the words that decide the label


def make_sentences(n: int, generator: torch.Generator) -> Sentences:
    """``n`` random sentences of the task (see the module's docstring), drawn from ``generator``."""
    def draw(high: int, size=()) -> Tensor:
        return torch.randint(high, size, generator=generator)

    ids = torch.full((n, LENGTH), PAD, dtype=torch.long)
    triggers = torch.zeros(n, LENGTH, dtype=torch.bool)
    labels = torch.empty(n, dtype=torch.long)
    for row in range(n):
        length = MIN_LENGTH + int(draw(LENGTH - MIN_LENGTH + 1))
        while True:  # redraw ties: the label must be decided by the triggers
            count = 1 + int(draw(3))
            positive = draw(2, (count,)).bool()
            if 2 * int(positive.sum()) != count:
                break
        places = torch.randperm(length, generator=generator)[:count]
        ids[row, :length] = _FILLER_IDS[draw(len(FILLER), (length,))]
        ids[row, places] = torch.where(positive, _POSITIVE_IDS[draw(len(POSITIVE), (count,))],
                                       _NEGATIVE_IDS[draw(len(NEGATIVE), (count,))])
        triggers[row, places] = True
        labels[row] = int(2 * int(positive.sum()) > count)
    return Sentences(ids, (ids != PAD).long(), labels, triggers)


def words(ids: Tensor, attention_mask: Tensor) -> list:
    """The real words of one sentence, as strings (padding left out)."""
    return [VOCAB[int(i)] for i, real in zip(ids, attention_mask) if real]


class TinyTransformer(nn.Module):
    """Word and position embeddings, a ``nn.TransformerEncoder``, the mean over real words, two logits.

    ``forward(ids, attention_mask)``: the attention mask (1 = real word) is an extra forward argument, as in Hugging
    Face models; padded positions are masked out of attention and of the mean. ``embed`` is the word embedding, the
    module to put noise on (``noise_layer=model.embed``); ``[pad]`` embeds to zeros.
    """

    def __init__(self, hidden: int = 32, heads: int = 4, layers: int = 1) -> None:
        super().__init__()
        self.embed = nn.Embedding(len(VOCAB), hidden, padding_idx=PAD)
        self.position = nn.Embedding(LENGTH, hidden)
        layer = nn.TransformerEncoderLayer(hidden, heads, dim_feedforward=2 * hidden, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(hidden, 2)

    def forward(self, ids: Tensor, attention_mask: Tensor) -> Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        real = attention_mask.bool()
        hidden = self.encoder(self.embed(ids) + self.position(positions), src_key_padding_mask=~real)
        keep = real.unsqueeze(-1).to(hidden.dtype)
        return self.head((hidden * keep).sum(1) / keep.sum(1))


def train(data: Sentences, steps: int = 600, batch_size: int = 64, seed: int = 0, **sizes) -> TinyTransformer:
    """A :class:`TinyTransformer` (``sizes``: its keyword arguments) trained with Adam on ``data``, in eval mode.

    Seeded: the same data, steps and seed give the same weights (on one machine and torch version).
    """
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG as it was
        torch.manual_seed(seed)
        model = TinyTransformer(**sizes)
        optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
        order = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            rows = torch.randint(len(data.labels), (batch_size,), generator=order)
            loss = nn.functional.cross_entropy(model(data.ids[rows], data.attention_mask[rows]), data.labels[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


def accuracy(model: nn.Module, data: Sentences) -> float:
    with torch.no_grad():
        return float((model(data.ids, data.attention_mask).argmax(1) == data.labels).double().mean())


def trigger_mass(scores: Tensor, data: Sentences) -> Tensor:
    """Per sentence, the share of ``sum |score|`` over its real words that lies on its trigger words (NaN if all 0)."""
    mass = scores.detach().abs().double() * data.attention_mask
    return (mass * data.triggers).sum(1) / mass.sum(1)


def top_k_precision(scores: Tensor, data: Sentences) -> Tensor:
    """Per sentence with k triggers, the share of its k real words with the largest ``|score|`` that are triggers.

    Ties are broken by position (the earlier word first), as ``torch.sort(stable=True)`` orders them.
    """
    mass = scores.detach().abs().double().masked_fill(data.attention_mask == 0, -1.0)
    order = mass.sort(dim=1, descending=True, stable=True).indices
    k = data.triggers.sum(1, keepdim=True)
    ranked = data.triggers.gather(1, order) & (torch.arange(LENGTH) < k)
    return ranked.sum(1).double() / k.squeeze(1)


def chance(data: Sentences) -> Tensor:
    """What a uniform score gets on both measures, per sentence: triggers / real words."""
    return data.triggers.sum(1).double() / data.attention_mask.sum(1)


def summary(values: Sequence[float]) -> str:
    """``mean ± standard error`` over the sentences, NaNs left out."""
    values = torch.as_tensor(values, dtype=torch.float64)
    values = values[~values.isnan()]
    return f"{float(values.mean()):.3f} ± {float(values.std() / len(values) ** 0.5):.3f}"
