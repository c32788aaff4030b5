"""Text as token windows for autoregressive models, and the vocabularies that map text to token ids.

A ``Vocabulary`` is stored in every autoregressive checkpoint (as its class path and arguments, plain values
only), so that ``sample`` decodes tokens without the training data.
"""

from __future__ import annotations

import codecs
import importlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lit_gen._lightning import batches_done
from lit_gen.data.base import DataModule
from lit_gen.errors import LitGenError
from lit_gen.utils import derived_seed


class Vocabulary:
    """Maps symbols to token ids ``0 .. size - 1`` and back. Subclasses define ``size``, ``encode``, ``decode``
    and ``init_args`` (the plain-value arguments that rebuild them)."""

    size: int

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def decoder(self) -> codecs.IncrementalDecoder | None:
        """An incremental decoder for streaming (bytes), or None when single tokens decode on their own."""
        return None

    @property
    def start_id(self) -> int:
        """The token unconditional samples start from: the newline where there is one (nanoGPT's choice)."""
        ids = self.encode("\n") if "\n" in self.symbols() else [0]
        return ids[0]

    def symbols(self) -> str:
        return ""

    def init_args(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_config(self) -> dict[str, Any]:
        """``{"class_path": ..., "init_args": ...}``: what a checkpoint stores."""
        cls = type(self)
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": self.init_args()}

    @staticmethod
    def from_config(config: dict[str, Any]) -> Vocabulary:
        """Rebuilds a vocabulary from ``to_config``'s output (only ``Vocabulary`` subclasses are accepted)."""
        module_name, _, name = str(config["class_path"]).rpartition(".")
        cls = getattr(importlib.import_module(module_name), name, None)
        if not (isinstance(cls, type) and issubclass(cls, Vocabulary)):
            raise LitGenError(
                f"ckpt_path: vocabulary class '{config['class_path']}' is not a lit_gen Vocabulary"
            )
        return cls(**config.get("init_args", {}))


class CharVocabulary(Vocabulary):
    """Character-level: the sorted set of the characters of the training text (nanoGPT's shakespeare_char).

    Args:
        chars: the characters, in token-id order.
    """

    def __init__(self, chars: str) -> None:
        if len(set(chars)) != len(chars) or not chars:
            raise LitGenError("data: a character vocabulary needs distinct characters")
        self.chars = chars
        self.size = len(chars)
        self._ids = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharVocabulary:
        return cls("".join(sorted(set(text))))

    def symbols(self) -> str:
        return self.chars

    def encode(self, text: str) -> list[int]:
        try:
            return [self._ids[c] for c in text]
        except KeyError as err:
            raise LitGenError(f"prompt: character {err.args[0]!r} is not in the model's vocabulary") from None

    def encode_array(self, text: str) -> np.ndarray:
        """The whole text as a compact array (uint8 up to 256 symbols, else uint16)."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        table = np.frombuffer(self.chars.encode("utf-32-le"), dtype=np.uint32)
        order = np.argsort(table)
        positions = np.searchsorted(table[order], codes)
        positions = np.clip(positions, 0, len(table) - 1)
        if not np.array_equal(table[order][positions], codes):
            raise LitGenError("data: the text has characters outside the vocabulary")
        return order[positions].astype(np.uint8 if self.size <= 256 else np.uint16)

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def init_args(self) -> dict[str, Any]:
        return {"chars": self.chars}


class ByteVocabulary(Vocabulary):
    """Byte-level: the 256 byte values of the UTF-8 encoded text; decoding replaces invalid sequences."""

    size = 256

    def symbols(self) -> str:
        return "\n"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def decoder(self) -> codecs.IncrementalDecoder:
        return codecs.getincrementaldecoder("utf-8")(errors="replace")

    def init_args(self) -> dict[str, Any]:
        return {}


def read_text(path: Path, byte_level: bool) -> bytes | str:
    """A file's content, or the concatenation of every file under a folder (sorted by path, hidden skipped)."""
    if not path.exists():
        raise LitGenError(f"data.path: '{path}' does not exist")
    files = (
        [path]
        if path.is_file()
        else sorted(
            p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.parts)
        )
    )
    if not files:
        raise LitGenError(f"data.path: folder '{path}' holds no files")
    raw = b"".join(p.read_bytes() for p in files)
    if byte_level:
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise LitGenError(
            f"data.path: '{path}' is not UTF-8 text ({err.reason} at byte {err.start}); "
            "use data.byte_level: true for arbitrary bytes"
        ) from None


class RandomWindowBatches:
    """An endless stream of training batches ``(x, y)`` of random windows: ``x = tokens[s : s + T]``,
    ``y = tokens[s + 1 : s + T + 1]`` (long, ``(batch_size, T)``), starts drawn uniformly.

    Batch ``b`` is drawn from a generator seeded with ``derived_seed(seed, rank, b)``: the stream depends only
    on the seed, the process rank and the batch index, so a resumed run continues with exactly the batches the
    uninterrupted run would have used. ``batch_index`` (the next batch) is what the checkpoint stores; while
    a trainer is attached it is read from the trainer's count of processed batches (the loop pre-fetches).
    """

    def __init__(
        self, tokens: np.ndarray, block_size: int, batch_size: int, seed: int, rank: int = 0
    ) -> None:
        self.tokens, self.block_size, self.batch_size = tokens, block_size, batch_size
        self.seed, self.rank = seed, rank
        self.batch_index = 0
        self.batches_consumed = None  # optional callable: batches the trainer has processed
        self._offsets = np.arange(block_size + 1)

    def batch(self, index: int) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(derived_seed(self.seed, self.rank, index))
        starts = torch.randint(len(self.tokens) - self.block_size, (self.batch_size,), generator=g).numpy()
        windows = torch.from_numpy(self.tokens[starts[:, None] + self._offsets].astype(np.int64))
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        while True:
            index = self.batch_index
            self.batch_index += 1
            yield self.batch(index)

    def state_dict(self) -> dict[str, int]:
        consumed = self.batches_consumed() if self.batches_consumed is not None else self.batch_index
        return {"batch_index": int(consumed)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_index = int(state["batch_index"])


class FixedWindows(Dataset):
    """``count`` windows at seeded random starts (the same every time): a fixed validation set."""

    def __init__(self, tokens: np.ndarray, block_size: int, count: int, seed: int) -> None:
        self.tokens, self.block_size = tokens, block_size
        g = torch.Generator().manual_seed(seed)
        self.starts = torch.randint(len(tokens) - block_size, (count,), generator=g).numpy()
        self._offsets = np.arange(block_size + 1)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        window = torch.from_numpy(self.tokens[self.starts[i] + self._offsets].astype(np.int64))
        return window[:-1], window[1:]


class Text(DataModule):
    """A text file (or a folder of files, concatenated) as windows of ``block_size`` tokens, nanoGPT's protocol:
    the first 90 % of the tokens train, the last 10 % validate. Nothing is downloaded.

    Training batches are random windows drawn without end (``RandomWindowBatches``; set ``trainer.max_steps``).
    Validation uses ``len(val) // block_size`` windows at fixed seeded random starts, so every evaluation sees
    the same windows; ``trainer.limit_val_batches`` evaluates on the first batches only.

    Args:
        path: a text file or a folder of text files.
        block_size: tokens per window (the model's context).
        byte_level: 256 byte tokens instead of the sorted set of characters.
        val_fraction: the share at the end that validates.
    """

    def __init__(
        self,
        path: str,
        block_size: int = 256,
        byte_level: bool = False,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        val_fraction: float = 0.1,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if block_size < 1:
            raise LitGenError(f"data.block_size must be a positive integer, got {block_size}")
        if not 0.0 < val_fraction < 1.0:
            raise LitGenError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
        self.path, self.block_size, self.byte_level = Path(path).expanduser(), block_size, byte_level
        self.val_fraction = val_fraction
        self.vocabulary: Vocabulary | None = None
        self.train_tokens: np.ndarray | None = None
        self.val_tokens: np.ndarray | None = None

    @property
    def vocab_size(self) -> int:
        return self.vocabulary.size

    def setup(self, stage: str | None = None) -> None:
        if self.train_tokens is not None:
            return
        content = read_text(self.path, self.byte_level)
        if self.byte_level:
            self.vocabulary = ByteVocabulary()
            tokens = np.frombuffer(content, dtype=np.uint8)
        else:
            self.vocabulary = CharVocabulary.from_text(content)
            tokens = self.vocabulary.encode_array(content)
        n_train = int(len(tokens) * (1.0 - self.val_fraction))
        self.train_tokens, self.val_tokens = tokens[:n_train], tokens[n_train:]
        for name, part in (("training", self.train_tokens), ("validation", self.val_tokens)):
            if len(part) <= self.block_size + 1:
                raise LitGenError(
                    f"data.path: the {name} part of '{self.path}' has {len(part)} tokens, fewer than "
                    f"data.block_size + 2 = {self.block_size + 2}"
                )

    def train_dataloader(self) -> RandomWindowBatches:
        rank = self.trainer.global_rank if self.trainer is not None else 0
        batches = RandomWindowBatches(self.train_tokens, self.block_size, self.batch_size, self.seed, rank)
        if self.trainer is not None:
            trainer = self.trainer
            batches.batches_consumed = lambda: batches_done(trainer)
        return batches

    def val_dataloader(self) -> DataLoader:
        count = max(self.batch_size, len(self.val_tokens) // self.block_size)
        windows = FixedWindows(self.val_tokens, self.block_size, count, derived_seed(self.seed, 1))
        return DataLoader(windows, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)
