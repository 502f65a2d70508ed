"""The default task's gold reward: positive sentiment, but only in well-formed text.

  words      the completion split at ASCII whitespace (space, \\t, \\n, \\r, \\v, \\f)
  a word is known when it is 1-18 ASCII letters, optionally followed by one "," or ".",
             its lowercase letters are in the lexicon (`lexicon.py`), and it is cased
             right: "I" is always capitalized, a sentence's first word is capitalized,
             every other letter is lowercase
  sentences  a word whose last character is "." ends one; words after the last "." form
             an unfinished sentence
  class      a known word's lexicon class; UNKNOWN otherwise

  lexicon    = known words / words
  grammar    = allowed transitions / (words + sentence ends): each word's class must be
               allowed after the previous word's (START at a sentence's first word), and
               each sentence-ending word's class before END (`lexicon.ALLOWED`)
  sentences  = finished sentences of 3-16 words / sentences
  repetition = 1 / (1 + excess), excess = Σ over content words (nouns, adjectives,
               adverbs, verbs, openers) of max(0, count - 2)
  form       = lexicon · grammar · sentences · repetition        in [0, 1]; 0 for no words
  net        = Σ valence(word) · scale · sign over the words, where scale is the
               adverb's (e.g. "very" 1.5) when the previous word is an adverb, and sign is
               -1 when the previous word, or the one before an adverb there, is a negation
               ("not very good": -1.5); "previous" stays within the sentence
  sentiment  = tanh(net / 3)                                       in (-1, 1)
  gold       = form · (1 + sentiment) - 1                          in [-1, 1)

So well-formed neutral text scores 0, well-formed positive text up to 1 with quickly
diminishing returns (tanh), well-formed negative text down to -1, and text that breaks
form falls toward -1 whatever its sentiment: "good good good good" scores -1, and
"The food was great. The soup was great. The tea was great." loses half its form to the
repeated "great" and scores about 0. The prompt does not enter the default gold reward;
it is an argument so that other tasks' rewards share the signature.

`gold_reward` is the reference, on text (host side). `gold_reward_bytes` computes the
same on byte-tokenizer ids (`tokenizer.ByteTokenizer`: ids 0..255 are bytes, special ids
are dropped) as a pure jittable function of arrays, so a teacher can score completions
on the device; a BPE tokenizer's completions must be decoded and scored on the host.
"""

import math
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax.lm import lexicon as lex

SENTIMENT_SCALE = 3.0
MIN_SENTENCE_WORDS = 3
MAX_SENTENCE_WORDS = 16
MAX_REPEATS = 2  # of one content word; each occurrence after these adds 1 to `excess`

_WHITESPACE = re.compile(r"[ \t\n\r\x0b\x0c]+")
_WORD = re.compile(rf"([A-Za-z]{{1,{lex.MAX_WORD_LETTERS}}})([.,]?)")


class GoldDetails(NamedTuple):
  lexicon: float
  grammar: float
  sentences: float
  repetition: float
  form: float
  sentiment: float
  reward: float


def _known_entry(word: str, starts_sentence: bool) -> lex.Entry | None:
  """The lexicon entry of a word (with its trailing "," or "."), or None if unknown."""
  match = _WORD.fullmatch(word)
  if match is None:
    return None
  letters = match.group(1)
  lower = letters.lower()
  if lower == "i":
    cased = letters == "I"
  elif starts_sentence:
    cased = letters == lower.capitalize()
  else:
    cased = letters == lower
  return lex.LEXICON.get(lower) if cased else None


def _split_sentences(words: list[str]) -> list[list[str]]:
  sentences, current = [], []
  for word in words:
    current.append(word)
    if word.endswith("."):
      sentences.append(current)
      current = []
  return sentences + ([current] if current else [])


def gold_details(prompt: str, completion: str) -> GoldDetails:
  """Every factor of the gold reward of `completion` (see the module doc)."""
  del prompt  # the default task's reward does not depend on the prompt
  words = [word for word in _WHITESPACE.split(completion) if word]
  if not words:
    return GoldDetails(0.0, 0.0, 0.0, 1.0, 0.0, 0.0, -1.0)
  known = allowed = finished_ok = 0
  ends = 0
  net = 0.0
  content_counts: dict[str, int] = {}
  sentences = _split_sentences(words)
  for sentence in sentences:
    entries = [_known_entry(word, position == 0) for position, word in enumerate(sentence)]
    classes = [lex.UNKNOWN if entry is None else entry.word_class for entry in entries]
    for position, (word, entry) in enumerate(zip(sentence, entries, strict=True)):
      previous = classes[position - 1] if position >= 1 else lex.START
      before_previous = classes[position - 2] if position >= 2 else lex.START
      allowed += bool(lex.ALLOWED[previous, classes[position]])
      if entry is None:
        continue
      known += 1
      scale = entries[position - 1].scale if previous == lex.ADV else 1.0
      negated = previous == lex.NEG or (previous == lex.ADV and before_previous == lex.NEG)
      net += entry.valence * scale * (-1.0 if negated else 1.0)
      if entry.word_class in lex.CONTENT_CLASSES:
        lower = _WORD.fullmatch(word).group(1).lower()
        content_counts[lower] = content_counts.get(lower, 0) + 1
    if sentence[-1].endswith("."):
      ends += 1
      allowed += bool(lex.ALLOWED[classes[-1], lex.END])
      finished_ok += MIN_SENTENCE_WORDS <= len(sentence) <= MAX_SENTENCE_WORDS
  excess = sum(max(0, count - MAX_REPEATS) for count in content_counts.values())
  lexicon_share = known / len(words)
  grammar = allowed / (len(words) + ends)
  sentence_share = finished_ok / len(sentences)
  repetition = 1.0 / (1.0 + excess)
  form = lexicon_share * grammar * sentence_share * repetition
  sentiment = math.tanh(net / SENTIMENT_SCALE)
  reward = form * (1.0 + sentiment) - 1.0
  return GoldDetails(lexicon_share, grammar, sentence_share, repetition, form, sentiment, reward)


def gold_reward(prompt: str, completion: str) -> float:
  """The gold reward of one completion, in [-1, 1) (formula in the module doc)."""
  return gold_details(prompt, completion).reward


# ---------------------------------------------------------------------------------------
# The same on byte-tokenizer ids, jittable.

_LETTERS_PER_CODE = 6  # 5 bits each: a lowercase letter is 1..26, 0 marks the end


def _word_code(word: str) -> np.ndarray:
  """uint32-safe int32 [3]: the word's letters (a=1 .. z=26) packed 6 per integer."""
  code = np.zeros(lex.MAX_WORD_LETTERS // _LETTERS_PER_CODE, np.int32)
  for position, letter in enumerate(word):
    chunk, slot = divmod(position, _LETTERS_PER_CODE)
    code[chunk] += (ord(letter) - 96) << (5 * slot)
  return code


_LEXICON_WORDS = tuple(lex.LEXICON)
_LEXICON_CODES = np.stack([_word_code(word) for word in _LEXICON_WORDS])  # [K, 3]
_LEXICON_CLASS = np.array([lex.LEXICON[w].word_class for w in _LEXICON_WORDS], np.int32)
_LEXICON_VALENCE = np.array([lex.LEXICON[w].valence for w in _LEXICON_WORDS], np.float32)
_LEXICON_SCALE = np.array([lex.LEXICON[w].scale for w in _LEXICON_WORDS], np.float32)
_I_CODE = _word_code("i")
_WHITESPACE_BYTES = np.array([9, 10, 11, 12, 13, 32])
_PERIOD, _COMMA = ord("."), ord(",")


def _shift_right(x, fill):
  """x [W] -> [fill, x_0, .., x_{W-2}]: each word's value at the previous word."""
  return jnp.concatenate([jnp.full((1,), fill, x.dtype), x[:-1]])


def _gold_of_bytes(tokens, mask):
  """The gold reward float32 [] of one completion: byte ids int [N], mask [N]."""
  length = tokens.shape[0]
  max_words = (length + 1) // 2
  # Drop padding and special ids (as decoding does), moving the kept bytes to the front.
  keep = mask.astype(bool) & (tokens >= 0) & (tokens < 256)
  order = jnp.argsort(~keep, stable=True)
  index = jnp.arange(length)
  data = jnp.where(index < jnp.sum(keep), tokens[order], 32).astype(jnp.int32)

  space = jnp.isin(data, _WHITESPACE_BYTES)
  upper = (data >= 65) & (data <= 90)
  letter = upper | ((data >= 97) & (data <= 122))
  starts = ~space & _shift_right(space, True)
  last_byte = ~space & jnp.concatenate([space[1:], jnp.ones((1,), bool)])
  word_of_byte = jnp.cumsum(starts) - 1
  member = ~space[:, None] & (word_of_byte[:, None] == jnp.arange(max_words)[None])  # [N, W]
  start_of_byte = jax.lax.cummax(jnp.where(starts, index, 0))
  in_word = index - start_of_byte  # a byte's position in its word

  per_word = lambda values: jnp.sum(jnp.where(member, values[:, None], 0), axis=0)  # [W]
  num_words = jnp.sum(starts)
  valid = jnp.arange(max_words) < num_words
  num_bytes = per_word(jnp.ones_like(data))
  num_letters = per_word(letter.astype(jnp.int32))
  num_upper = per_word(upper.astype(jnp.int32))
  first_upper = per_word((upper & (in_word == 0)).astype(jnp.int32)) > 0
  final = per_word(jnp.where(last_byte, data, 0))
  punctuated = (final == _PERIOD) | (final == _COMMA)
  well_shaped = (
    (num_letters >= 1)
    & (num_letters <= lex.MAX_WORD_LETTERS)
    & (num_bytes == num_letters + punctuated)
  )
  value = jnp.where(letter, (data | 32) - 96, 0)  # a=1 .. z=26, whatever the case
  chunk, slot = in_word // _LETTERS_PER_CODE, in_word % _LETTERS_PER_CODE
  codes = jnp.stack(
    [per_word(jnp.where(chunk == c, value << (5 * slot), 0)) for c in range(3)], axis=-1
  )  # [W, 3]

  matches = jnp.all(codes[:, None, :] == _LEXICON_CODES[None], axis=-1)  # [W, K]
  found = jnp.any(matches, axis=-1)
  entry = jnp.argmax(matches, axis=-1)
  ends = valid & (final == _PERIOD)
  starts_sentence = _shift_right(ends, True)
  is_i = jnp.all(codes == _I_CODE, axis=-1)
  cased = jnp.where(is_i | starts_sentence, first_upper & (num_upper == 1), num_upper == 0)
  known = valid & well_shaped & found & cased
  word_class = jnp.where(known, jnp.asarray(_LEXICON_CLASS)[entry], lex.UNKNOWN)
  valence = jnp.where(known, jnp.asarray(_LEXICON_VALENCE)[entry], 0.0)
  scale = jnp.where(known, jnp.asarray(_LEXICON_SCALE)[entry], 1.0)

  previous = jnp.where(starts_sentence, lex.START, _shift_right(word_class, lex.START))
  previous_starts = _shift_right(starts_sentence, True)
  before_previous = jnp.where(
    starts_sentence | previous_starts, lex.START, _shift_right(_shift_right(word_class, 0), 0)
  )
  allowed_table = jnp.asarray(lex.ALLOWED)
  allowed = jnp.sum(valid & allowed_table[previous, word_class]) + jnp.sum(
    ends & allowed_table[word_class, lex.END]
  )
  num_ends = jnp.sum(ends)
  grammar = allowed / jnp.maximum(num_words + num_ends, 1)

  word_index = jnp.arange(max_words)
  sentence_start = jax.lax.cummax(jnp.where(starts_sentence, word_index, 0))
  sentence_words = word_index - sentence_start + 1
  finished_ok = ends & (sentence_words >= MIN_SENTENCE_WORDS)
  finished_ok &= sentence_words <= MAX_SENTENCE_WORDS
  num_sentences = jnp.sum(valid & starts_sentence)
  sentence_share = jnp.sum(finished_ok) / jnp.maximum(num_sentences, 1)

  content = known & jnp.isin(word_class, jnp.array(lex.CONTENT_CLASSES))
  same = jnp.all(codes[:, None, :] == codes[None, :, :], axis=-1) & content[:, None] & content
  earlier_copies = jnp.sum(same & (word_index[None, :] < word_index[:, None]), axis=-1)
  excess = jnp.sum(content & (earlier_copies >= MAX_REPEATS))
  repetition = 1.0 / (1.0 + excess)

  scale_here = jnp.where(previous == lex.ADV, _shift_right(scale, 1.0), 1.0)
  negated = (previous == lex.NEG) | ((previous == lex.ADV) & (before_previous == lex.NEG))
  net = jnp.sum(valence * scale_here * jnp.where(negated, -1.0, 1.0))
  sentiment = jnp.tanh(net / SENTIMENT_SCALE)

  lexicon_share = jnp.sum(known) / jnp.maximum(num_words, 1)
  form = jnp.where(num_words > 0, lexicon_share * grammar * sentence_share * repetition, 0.0)
  return (form * (1.0 + sentiment) - 1.0).astype(jnp.float32)


def gold_reward_bytes(tokens, mask):
  """Gold rewards float32 [B] of completions in byte-tokenizer ids: tokens int [B, N],
  mask [B, N] (1: a generated token). Ids outside 0..255 (PAD, BOS, EOS) and masked
  positions are dropped before scoring, as `ByteTokenizer.decode` drops them; equals
  `gold_reward` of the decoded text up to float32 rounding. Pure; jit at the call site."""
  return jax.vmap(_gold_of_bytes)(jnp.asarray(tokens), jnp.asarray(mask))
