"""Text data from local JSONL files, and SFT batches (host side, not jittable).

One JSON object per line; blank lines are skipped; other fields are ignored.
  SFT text      {"text": ...}  or  {"prompt": ..., "completion": ...}
  prompts       {"prompt": ...}
  comparisons   {"prompt": ..., "chosen": ..., "rejected": ...}  (+ "tie": true for a tie)
                (the shape of Anthropic's HH-RLHF and of summarize-from-feedback once
                flattened; "chosen" and "rejected" are completions of the prompt)
A malformed row raises ValueError naming the file and the line. The default task
(`synthetic.write_default_task`) is written in these shapes, so it and a user's data
take the same path.

An SFT sequence is [BOS] + prompt + completion + [EOS]; the loss counts the completion
and the EOS (`target_mask`), never BOS, the prompt or padding. A plain {"text"} row is a
completion with an empty prompt. Sequences are right-padded to a fixed length; a longer
one keeps its first tokens (its end, EOS included, is cut off), and one whose completion
is cut off entirely has no targets (`count_truncated` says how many are cut).

For the later stages, `prompt_arrays` left-pads prompts and `completion_arrays`
right-pads completions (+ EOS) as `sampling.sample` lays them out, so a text comparison
and a sampled pair reach the reward model in the same layout.
"""

import json
import os
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from rlhf_jax.lm.tokenizer import Tokenizer, left_pad, right_pad


class SFTExample(NamedTuple):
  prompt: str  # "" for plain text
  completion: str


class Comparison(NamedTuple):
  prompt: str
  chosen: str
  rejected: str
  tie: bool = False  # the labeller found them equally good (B-Pref's "equal" answer)


class SFTBatch(NamedTuple):
  tokens: np.ndarray  # int32 [B, T]
  mask: np.ndarray  # bool [B, T]: real tokens (padding 0)
  target_mask: np.ndarray  # bool [B, T]: tokens the loss predicts (completion and EOS)


def read_jsonl(path: str) -> list[tuple[int, dict]]:
  """(line number, object) for every non-blank line of `path`."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No JSONL file at {path!r}.")
  rows = []
  with open(path, encoding="utf-8") as file:
    for line_number, line in enumerate(file, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{line_number}: not valid JSON ({error.msg}).") from None
      if not isinstance(row, dict):
        raise ValueError(f"{path}:{line_number}: expected a JSON object, got {line.strip()!r}.")
      rows.append((line_number, row))
  return rows


def _fields(path: str, line_number: int, row: dict, names: Sequence[str]) -> list[str]:
  values = []
  for name in names:
    if name not in row:
      raise ValueError(
        f"{path}:{line_number}: missing field {name!r} (the row has {sorted(row)}; "
        f"expected {list(names)})."
      )
    if not isinstance(row[name], str):
      raise ValueError(
        f"{path}:{line_number}: field {name!r} must be a string, got {type(row[name]).__name__}."
      )
    values.append(row[name])
  return values


def _nonempty(path: str, rows: list) -> list:
  if not rows:
    raise ValueError(f"{path} holds no rows.")
  return rows


def read_sft(path: str) -> list[SFTExample]:
  """SFT examples from rows {"text"} or {"prompt", "completion"}."""
  examples = []
  for line_number, row in read_jsonl(path):
    if "text" in row and "completion" not in row:
      examples.append(SFTExample("", *_fields(path, line_number, row, ["text"])))
    elif "prompt" not in row and "completion" not in row:
      raise ValueError(
        f"{path}:{line_number}: an SFT row needs 'text', or 'prompt' and 'completion' "
        f"(the row has {sorted(row)})."
      )
    else:
      examples.append(SFTExample(*_fields(path, line_number, row, ["prompt", "completion"])))
  return _nonempty(path, examples)


def read_prompts(path: str) -> list[str]:
  """Prompts from rows {"prompt"}."""
  rows = read_jsonl(path)
  return _nonempty(path, [_fields(path, n, row, ["prompt"])[0] for n, row in rows])


def read_comparisons(path: str) -> list[Comparison]:
  """Comparisons from rows {"prompt", "chosen", "rejected"} and an optional boolean
  "tie" (true: equally good, so neither is chosen)."""
  names = ["prompt", "chosen", "rejected"]
  comparisons = []
  for line_number, row in read_jsonl(path):
    tie = row.get("tie", False)
    if not isinstance(tie, bool):
      raise ValueError(f"{path}:{line_number}: field 'tie' must be true or false, got {tie!r}.")
    comparisons.append(Comparison(*_fields(path, line_number, row, names), tie=tie))
  return _nonempty(path, comparisons)


def write_jsonl(path: str, rows: Iterable[dict]) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as file:
    for row in rows:
      file.write(json.dumps(row, ensure_ascii=False) + "\n")


def encode_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
  """[BOS] + the prompt's ids: what sampling conditions on, as SFT trained it."""
  return [tokenizer.bos_id, *tokenizer.encode(prompt)]


def encode_sft_example(tokenizer: Tokenizer, example: SFTExample) -> tuple[list[int], list[bool]]:
  """(ids, is_target): [BOS] + prompt + completion + [EOS], targets the last two parts."""
  prompt = encode_prompt(tokenizer, example.prompt)
  completion = [*tokenizer.encode(example.completion), tokenizer.eos_id]
  return prompt + completion, [False] * len(prompt) + [True] * len(completion)


def sft_batch(tokenizer: Tokenizer, examples: Sequence[SFTExample], length: int) -> SFTBatch:
  """The examples encoded and right-padded to `length` tokens (see the module doc)."""
  encoded = [encode_sft_example(tokenizer, example) for example in examples]
  tokens, mask = right_pad([ids for ids, _ in encoded], length, tokenizer.pad_id)
  target_mask, _ = right_pad([targets for _, targets in encoded], length, 0)
  return SFTBatch(tokens=tokens, mask=mask, target_mask=target_mask.astype(bool) & mask)


def count_truncated(tokenizer: Tokenizer, examples: Sequence[SFTExample], length: int) -> int:
  """How many examples are longer than `length` tokens (and lose their end)."""
  return sum(len(encode_sft_example(tokenizer, e)[0]) > length for e in examples)


def prompt_arrays(tokenizer: Tokenizer, prompts: Sequence[str], length: int):
  """(tokens int32 [B, length], mask bool [B, length]): each prompt's `encode_prompt`
  ids left-padded (a longer one keeps its last `length` ids), as sampling takes them."""
  return left_pad(
    [encode_prompt(tokenizer, prompt) for prompt in prompts], length, tokenizer.pad_id
  )


def completion_arrays(tokenizer: Tokenizer, completions: Sequence[str], length: int):
  """(tokens int32 [B, length], mask bool [B, length]): each completion's ids + [EOS]
  right-padded and cut to `length`, as `sampling.sample` (with eos_id) lays them out."""
  encoded = [[*tokenizer.encode(text), tokenizer.eos_id] for text in completions]
  return right_pad(encoded, length, tokenizer.pad_id)


def decode_completions(tokenizer: Tokenizer, tokens, mask) -> list[str]:
  """The texts of completions tokens [B, N] (their real tokens per `mask`; special ids
  such as EOS are dropped by `decode`)."""
  tokens, mask = np.asarray(tokens), np.asarray(mask, bool)
  return [tokenizer.decode(row[kept]) for row, kept in zip(tokens, mask, strict=True)]
