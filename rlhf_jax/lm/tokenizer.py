"""Tokenizers (host side): UTF-8 bytes by default, GPT-2's BPE from local files.

Both have one interface (`Tokenizer`): `encode(text) -> list[int]`, `decode(ids) -> str`,
`vocab_size`, `pad_id`, `bos_id`, `eos_id`. `encode` reads text literally: a special
token's spelling in the text ("<|endoftext|>") is encoded as ordinary text, never as the
special id; callers add BOS and EOS themselves. `decode` drops special ids and replaces
bytes that are not valid UTF-8 with U+FFFD (a model can emit half a character).

  ByteTokenizer       ids 0..255 are the UTF-8 bytes, 256 PAD, 257 BOS, 258 EOS (V = 259);
                      needs no files and reads any text
  load_gpt2_tokenizer GPT-2's byte-level BPE from a local directory holding vocab.json +
                      merges.txt, or tokenizer.json (Hugging Face's file); nothing is
                      downloaded. GPT-2 has one special token, <|endoftext|>, which serves
                      as PAD, BOS and EOS alike (padding is told apart by the mask).

Batches (NumPy, int32 ids and bool masks, 1 for a real token):
  left_pad(sequences, length, pad_id)   prompts, real tokens at the right end; a longer
                                        sequence keeps its LAST `length` tokens (the end
                                        of a prompt is what the completion follows)
  right_pad(sequences, length, pad_id)  training texts, real tokens at the left; a longer
                                        sequence keeps its FIRST `length` tokens
"""

import functools
import json
import math
import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import regex


class Tokenizer(Protocol):
  vocab_size: int
  pad_id: int
  bos_id: int
  eos_id: int

  def encode(self, text: str) -> list[int]: ...

  def decode(self, ids: Sequence[int]) -> str: ...


class ByteTokenizer:
  """UTF-8 bytes as tokens 0..255, then PAD, BOS, EOS."""

  vocab_size = 259
  pad_id = 256
  bos_id = 257
  eos_id = 258

  def encode(self, text: str) -> list[int]:
    return list(text.encode("utf-8"))

  def decode(self, ids: Sequence[int]) -> str:
    return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")


# GPT-2's pre-tokenization: contractions, runs of letters, of digits, of other symbols
# (each with one leading space), then whitespace; BPE never merges across these pieces.
_GPT2_PIECES = regex.compile(
  r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
ENDOFTEXT = "<|endoftext|>"


@functools.cache
def byte_to_symbol() -> dict[int, str]:
  """GPT-2's printable stand-in for every byte: the bytes that are printable Latin-1
  characters ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; the other 68, in byte
  order, become chr(256), chr(257), ... (so a space is 'Ġ', chr(288))."""
  printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
  others = [b for b in range(256) if b not in printable]
  table = {b: chr(b) for b in printable}
  table.update({b: chr(256 + n) for n, b in enumerate(others)})
  return table


def _first(pair):
  return pair[0]


class BPETokenizer:
  """Byte-level BPE as GPT-2's: text -> pieces (`_GPT2_PIECES`) -> bytes -> symbols
  (`byte_to_symbol`) -> repeatedly merge the adjacent pair that comes first in `merges`
  -> ids of the merged symbols in `vocab`."""

  def __init__(self, vocab: dict[str, int], merges: Sequence[tuple[str, str]], special: str):
    if special not in vocab:
      raise ValueError(f"The vocabulary has no special token {special!r}.")
    self._vocab = dict(vocab)
    self._symbols = {i: symbol for symbol, i in vocab.items()}
    self._rank = {tuple(pair): rank for rank, pair in enumerate(merges)}
    self._byte_of = {symbol: b for b, symbol in byte_to_symbol().items()}
    self.vocab_size = max(vocab.values()) + 1
    self.pad_id = self.bos_id = self.eos_id = vocab[special]
    self._special_ids = {vocab[special]}
    self._cache: dict[str, list[int]] = {}

  def _merge(self, symbols: list[str]) -> list[str]:
    """Applies the merges to one piece's symbols, best-ranked pair first; each round
    merges every occurrence of that pair, left to right."""
    while len(symbols) > 1:
      pairs = zip(symbols[:-1], symbols[1:], strict=True)
      rank, best = min(((self._rank.get(pair, math.inf), pair) for pair in pairs), key=_first)
      if rank == math.inf:
        break
      merged, i = [], 0
      while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
          merged.append(symbols[i] + symbols[i + 1])
          i += 2
        else:
          merged.append(symbols[i])
          i += 1
      symbols = merged
    return symbols

  def _encode_piece(self, piece: str) -> list[int]:
    if piece not in self._cache:
      table = byte_to_symbol()
      symbols = self._merge([table[b] for b in piece.encode("utf-8")])
      missing = [s for s in symbols if s not in self._vocab]
      if missing:
        raise ValueError(f"BPE symbols {missing} of {piece!r} are not in the vocabulary.")
      self._cache[piece] = [self._vocab[s] for s in symbols]
    return self._cache[piece]

  def encode(self, text: str) -> list[int]:
    return [i for piece in _GPT2_PIECES.findall(text) for i in self._encode_piece(piece)]

  def decode(self, ids: Sequence[int]) -> str:
    symbols = "".join(self._symbols[int(i)] for i in ids if int(i) not in self._special_ids)
    return bytes(self._byte_of[c] for c in symbols).decode("utf-8", errors="replace")


def _read_merges(path: str) -> list[tuple[str, str]]:
  merges = []
  with open(path, encoding="utf-8") as file:
    for line_number, line in enumerate(file, 1):
      line = line.rstrip("\n")
      if not line or (line_number == 1 and line.startswith("#version")):
        continue
      parts = line.split(" ")
      if len(parts) != 2:
        raise ValueError(f"{path}:{line_number}: a merge is two symbols split by a space.")
      merges.append((parts[0], parts[1]))
  return merges


def _from_tokenizer_json(path: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
  with open(path, encoding="utf-8") as file:
    model = json.load(file).get("model", {})
  if model.get("type") != "BPE" or "vocab" not in model or "merges" not in model:
    raise ValueError(f"{path}: expected a BPE model with 'vocab' and 'merges'.")
  # Older files write a merge as "a b", newer ones as ["a", "b"].
  merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
  return model["vocab"], merges


def load_gpt2_tokenizer(directory: str, special: str = ENDOFTEXT) -> BPETokenizer:
  """GPT-2's tokenizer from `directory`: vocab.json + merges.txt (preferred) or
  tokenizer.json. FileNotFoundError naming the directory when neither is there."""
  vocab_path = os.path.join(directory, "vocab.json")
  merges_path = os.path.join(directory, "merges.txt")
  json_path = os.path.join(directory, "tokenizer.json")
  if os.path.isfile(vocab_path) and os.path.isfile(merges_path):
    with open(vocab_path, encoding="utf-8") as file:
      vocab = json.load(file)
    merges = _read_merges(merges_path)
  elif os.path.isfile(json_path):
    vocab, merges = _from_tokenizer_json(json_path)
  else:
    raise FileNotFoundError(
      f"No GPT-2 tokenizer in {directory!r}: it needs vocab.json and merges.txt, or "
      f"tokenizer.json (nothing is downloaded)."
    )
  return BPETokenizer(vocab, merges, special)


def make_tokenizer(name: str) -> Tokenizer:
  """ "byte" for `ByteTokenizer`, else a directory for `load_gpt2_tokenizer`."""
  return ByteTokenizer() if name == "byte" else load_gpt2_tokenizer(name)


def _check_length(length: int) -> None:
  if length < 1:
    raise ValueError(f"Pad to a length of at least 1, got {length}.")


def left_pad(sequences: Sequence[Sequence[int]], length: int, pad_id: int):
  """(tokens int32 [B, length], mask bool [B, length]) with each sequence at the right
  end; one longer than `length` keeps its last `length` tokens."""
  _check_length(length)
  tokens = np.full((len(sequences), length), pad_id, np.int32)
  mask = np.zeros((len(sequences), length), bool)
  for row, sequence in enumerate(sequences):
    kept = list(sequence)[-length:]
    if kept:
      tokens[row, length - len(kept) :] = kept
      mask[row, length - len(kept) :] = True
  return tokens, mask


def right_pad(sequences: Sequence[Sequence[int]], length: int, pad_id: int):
  """(tokens int32 [B, length], mask bool [B, length]) with each sequence at the left
  end; one longer than `length` keeps its first `length` tokens."""
  _check_length(length)
  tokens = np.full((len(sequences), length), pad_id, np.int32)
  mask = np.zeros((len(sequences), length), bool)
  for row, sequence in enumerate(sequences):
    kept = list(sequence)[:length]
    tokens[row, : len(kept)] = kept
    mask[row, : len(kept)] = True
  return tokens, mask
