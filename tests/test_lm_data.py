"""Tokenizers against hand-made cases, the default task and its gold reward against
hand-computed values (and the jitted byte version against the Python one), and the JSONL
readers and writer."""

import json
import math
import random

import jax
import numpy as np
import pytest

from rlhf_jax.lm import data, gold, synthetic, tokenizer
from rlhf_jax.lm import lexicon as lex

BYTES = tokenizer.ByteTokenizer()


# --- Tokenizers -----------------------------------------------------------------------


def test_byte_tokenizer_round_trip_on_unicode():
  text = "Grüße, 世界! naïve 🙂\n\ttabs"
  ids = BYTES.encode(text)
  assert BYTES.decode(ids) == text
  assert all(0 <= i < 256 for i in ids)
  # "é" is U+00E9, two bytes in UTF-8: 110_00011 10_101001.
  assert BYTES.encode("é") == [0xC3, 0xA9]
  assert BYTES.encode("🙂") == [0xF0, 0x9F, 0x99, 0x82]


def test_byte_tokenizer_special_ids():
  special = {BYTES.pad_id, BYTES.bos_id, BYTES.eos_id}
  assert len(special) == 3 and min(special) >= 256 and BYTES.vocab_size == 259
  assert max(special) < BYTES.vocab_size
  # decode drops special ids; an unfinished UTF-8 character becomes U+FFFD.
  assert BYTES.decode([BYTES.bos_id, 104, BYTES.pad_id, 105, BYTES.eos_id]) == "hi"
  assert BYTES.decode([104, 0xC3]) == "h\ufffd"
  # Special spellings in text are plain text.
  assert BYTES.encode("<|endoftext|>") == list(b"<|endoftext|>")


def test_left_pad_keeps_the_end_and_right_pad_the_start():
  sequences = [[1, 2, 3], [4], []]
  tokens, mask = tokenizer.left_pad(sequences, 2, pad_id=9)
  np.testing.assert_array_equal(tokens, [[2, 3], [9, 4], [9, 9]])
  np.testing.assert_array_equal(mask, [[1, 1], [0, 1], [0, 0]])
  tokens, mask = tokenizer.right_pad(sequences, 4, pad_id=9)
  np.testing.assert_array_equal(tokens, [[1, 2, 3, 9], [4, 9, 9, 9], [9, 9, 9, 9]])
  np.testing.assert_array_equal(mask, [[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
  tokens, mask = tokenizer.right_pad(sequences, 2, pad_id=9)
  np.testing.assert_array_equal(tokens, [[1, 2], [4, 9], [9, 9]])
  assert tokens.dtype == np.int32 and mask.dtype == bool
  with pytest.raises(ValueError, match="at least 1"):
    tokenizer.left_pad(sequences, 0, pad_id=9)


def test_gpt2_byte_symbols():
  table = tokenizer.byte_to_symbol()
  assert len(set(table.values())) == 256
  # GPT-2's vocabulary writes a space as "Ġ" and a newline as "Ċ"; printable ASCII as is.
  assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ"
  assert table[ord("a")] == "a" and table[ord("~")] == "~"


# A tiny GPT-2-style vocabulary: the symbols of "l o w e r", a space, and merges.
TINY_MERGES = [("l", "o"), ("lo", "w"), ("e", "r"), ("Ġ", "low"), ("low", "er")]
TINY_VOCAB = {
  s: i
  for i, s in enumerate(
    ["l", "o", "w", "e", "r", "Ġ", "lo", "low", "er", "Ġlow", "lower", "<|endoftext|>"]
  )
}


def write_tiny_bpe(directory, as_tokenizer_json=False, merges_as_lists=False):
  if as_tokenizer_json:
    merges = [list(m) if merges_as_lists else " ".join(m) for m in TINY_MERGES]
    model = {"type": "BPE", "vocab": TINY_VOCAB, "merges": merges}
    (directory / "tokenizer.json").write_text(json.dumps({"model": model}))
  else:
    (directory / "vocab.json").write_text(json.dumps(TINY_VOCAB))
    lines = ["#version: 0.2"] + [" ".join(m) for m in TINY_MERGES]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
  "as_tokenizer_json, merges_as_lists", [(False, False), (True, False), (True, True)]
)
def test_gpt2_bpe_on_a_tiny_vocabulary(tmp_path, as_tokenizer_json, merges_as_lists):
  write_tiny_bpe(tmp_path, as_tokenizer_json, merges_as_lists)
  bpe = tokenizer.load_gpt2_tokenizer(str(tmp_path))
  v = TINY_VOCAB
  # By hand: "lower" -> l o w e r -> lo w e r -> low e r -> low er -> lower;
  # " low" -> Ġ l o w -> Ġ lo w -> Ġ low -> Ġlow; "rol" has no merge; in "lowe" the
  # pair (e, r) never forms, so low + e.
  assert bpe.encode("lower low") == [v["lower"], v["Ġlow"]]
  assert bpe.encode("lowe") == [v["low"], v["e"]]
  assert bpe.encode("rol") == [v["r"], v["o"], v["l"]]
  assert bpe.decode(bpe.encode("lower low")) == "lower low"
  eos = v["<|endoftext|>"]
  assert bpe.pad_id == bpe.bos_id == bpe.eos_id == eos and bpe.vocab_size == len(v)
  assert bpe.decode([eos, v["lo"], v["w"], eos]) == "low"
  with pytest.raises(ValueError, match="not in the vocabulary"):
    bpe.encode("lowz")


def test_gpt2_loader_names_missing_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="vocab.json and merges.txt"):
    tokenizer.load_gpt2_tokenizer(str(tmp_path))
  (tmp_path / "vocab.json").write_text(json.dumps({"a": 0}))
  (tmp_path / "merges.txt").write_text("")
  with pytest.raises(ValueError, match="no special token"):
    tokenizer.load_gpt2_tokenizer(str(tmp_path))


# --- The gold reward ------------------------------------------------------------------


def reward(text):
  return gold.gold_reward("A review of the cafe:", text)


def test_gold_reward_by_hand():
  # Well-formed, so form = 1 and gold = tanh(net / 3): "very" scales "good" (+1) by 1.5.
  assert reward(" The food was very good.") == pytest.approx(math.tanh(1.5 / 3))
  assert reward(" The room was small.") == pytest.approx(0.0)
  assert reward(" The food was awful.") == pytest.approx(math.tanh(-2 / 3))
  # "not" turns the adjective around, through an adverb too.
  assert reward(" The soup was not bad.") == pytest.approx(math.tanh(1 / 3))
  assert reward(" The soup was not very good.") == pytest.approx(math.tanh(-1.5 / 3))
  # "Sadly" (-1), "loved" (+2), "great" (+2): net 3.
  text = " Sadly, the waiter was rude. We loved the bread and the tea was great."
  assert reward(text) == pytest.approx(math.tanh((-1 - 1 + 2 + 2) / 3))
  # Three "great": excess 1, repetition 1/2, form 1/2; net 6.
  text = " The food was great. The soup was great. The tea was great."
  assert reward(text) == pytest.approx(0.5 * (1 + math.tanh(2)) - 1)


def test_gold_orders_sentiment_and_punishes_broken_form():
  positive = " The staff was friendly and the food was delicious."
  neutral = " The room was small and the table was wooden."
  negative = " The staff was rude and the food was terrible."
  assert reward(positive) > reward(neutral) > reward(negative)
  assert reward(neutral) == pytest.approx(0.0)
  # Degenerate or garbled text scores the minimum or close to it, below neutral text.
  for text in (
    "",
    "   ",
    " good good good good",  # no sentence, and "good" may not start one
    " Xq zzv blorp wug.",
    " 12345 !!! ??",
    " The food was great",  # unfinished sentence
  ):
    assert reward(text) == pytest.approx(-1.0), text
  # Spam and word salad keep a little form (known words, one allowed transition).
  assert reward(" Great great great great great.") < -0.9
  assert reward(" Food the great was.") < -0.5
  # Broken form costs a positive text its lead over neutral text.
  assert reward(" the food was lovely.") < reward(positive)  # first word not capitalized
  assert reward(" The food was lovely, lovely and lovely.") < reward(neutral)
  assert reward(" The food was lovely. " + "The tea was lovely. " * 3) < reward(neutral)
  # Diminishing returns: a second positive sentence adds less than the first.
  one = reward(" The food was lovely.")
  two = reward(" The food was lovely. The tea was superb.")
  assert 0 < two - one < one


def test_gold_details_are_factors_in_range():
  details = gold.gold_details("", " The food was nice. Blorp the soup was.")
  # 8 words, 7 known; sentence 2 starts with an unknown word and ends on a copula.
  assert details.lexicon == pytest.approx(7 / 8)
  assert details.sentences == pytest.approx(1.0)
  assert 0 < details.grammar < 1
  assert details.form == pytest.approx(details.lexicon * details.grammar * details.sentences)


def perturbed_texts(count, seed):
  """Completions of the default task, broken in assorted ways, and random bytes."""
  rng = random.Random(seed)
  texts = []
  for _ in range(count):
    text = synthetic.sample_completion(rng, rng.choice(list(lex.TOPICS)))
    words = text.split(" ")
    kind = rng.randrange(8)
    if kind == 1:
      chars = list(text)
      for _ in range(rng.randrange(1, 4)):
        chars[rng.randrange(len(chars))] = rng.choice("abXYZ .,..é\n\t!I")
      text = "".join(chars)
    elif kind == 2:
      rng.shuffle(words)
      text = " ".join(words)
    elif kind == 3:
      text = " ".join(words + [rng.choice(words)] * rng.randrange(1, 5))
    elif kind == 4:
      text = text.upper() if rng.random() < 0.5 else text.lower()
    elif kind == 5:
      text = text.replace(".", "", 1)
    elif kind == 6:
      text = "".join(chr(rng.randrange(32, 127)) for _ in range(rng.randrange(60)))
    elif kind == 7:
      text = text[: rng.randrange(len(text))]
    texts.append(text)
  return texts


def test_gold_is_bounded():
  rewards = [reward(text) for text in perturbed_texts(300, seed=1)]
  assert min(rewards) >= -1 and max(rewards) < 1
  assert min(rewards) == -1 and max(rewards) > 0.5  # both ends are reached


def test_jitted_byte_gold_equals_the_python_gold():
  texts = perturbed_texts(200, seed=2) + [" I loved it. i loved it.", "I", "", " Not good."]
  length = 96
  rng = np.random.default_rng(0)
  rows, masks, decoded = [], [], []
  for text in texts:
    ids = BYTES.encode(text)[:length]
    # Special ids inside the text and padding at both ends: dropped, as decode drops them.
    for _ in range(rng.integers(0, 3)):
      ids.insert(int(rng.integers(0, len(ids) + 1)), int(rng.choice([256, 257])))
    ids = ids[: length - 2]
    before = int(rng.integers(0, length - len(ids) + 1))
    row = np.full(length, BYTES.pad_id)
    row[before : before + len(ids)] = ids
    mask = np.zeros(length, bool)
    mask[before : before + len(ids)] = True
    row[~mask] = rng.integers(0, 256, (~mask).sum())  # masked bytes must not count
    rows.append(row)
    masks.append(mask)
    decoded.append(BYTES.decode(ids))
  expected = np.array([gold.gold_reward("", text) for text in decoded])
  got = np.asarray(jax.jit(gold.gold_reward_bytes)(np.stack(rows), np.stack(masks)))
  assert got.shape == (len(texts),) and got.dtype == np.float32
  np.testing.assert_allclose(got, expected, atol=2e-6)
  assert len(set(np.round(expected, 4))) > 30  # the samples spread over many values


# --- The default task -----------------------------------------------------------------


def test_prompts_are_distinct_and_split_by_seed():
  prompts = synthetic.all_prompts()
  assert 300 <= len(prompts) == len(set(prompts))
  task = synthetic.split_prompts(seed=0)
  train, held_out = set(task.train_prompts), set(task.eval_prompts)
  assert not train & held_out and train | held_out == set(prompts)
  assert len(held_out) == round(synthetic.EVAL_FRACTION * len(prompts))
  assert synthetic.split_prompts(seed=0) == task
  assert set(synthetic.split_prompts(seed=1).eval_prompts) != held_out


def test_sft_corpus_uses_the_lexicon_and_mixes_sentiment():
  task = synthetic.split_prompts(seed=0)
  examples = synthetic.sft_examples(task.train_prompts, 600, seed=3)
  assert examples == synthetic.sft_examples(task.train_prompts, 600, seed=3)
  assert {e.prompt for e in examples} <= {p.text for p in task.train_prompts}
  for example in examples:
    assert example.completion.startswith(" ") and example.completion.endswith(".")
    assert len(example.completion) <= synthetic.MAX_COMPLETION_CHARS
    for word in example.completion.split():
      assert word.strip(",.").lower() in lex.LEXICON, word
  rewards = np.array([gold.gold_reward(e.prompt, e.completion) for e in examples])
  for share in (np.mean(rewards > 0.1), np.mean(rewards < -0.1), np.mean(np.abs(rewards) < 0.1)):
    assert share > 0.1
  assert len({e.completion for e in examples}) > 0.95 * len(examples)


def test_comparisons_prefer_the_higher_gold_reward():
  task = synthetic.split_prompts(seed=0)
  for c in synthetic.gold_comparisons(task.train_prompts, 50, seed=4):
    assert gold.gold_reward(c.prompt, c.chosen) > gold.gold_reward(c.prompt, c.rejected)


# --- JSONL ----------------------------------------------------------------------------


def test_write_default_task_round_trip(tmp_path):
  paths = synthetic.write_default_task(str(tmp_path), seed=5, num_sft=50, num_comparisons=20)
  task = synthetic.split_prompts(seed=5)
  assert data.read_prompts(paths["train_prompts"]) == [p.text for p in task.train_prompts]
  assert data.read_prompts(paths["eval_prompts"]) == [p.text for p in task.eval_prompts]
  examples = data.read_sft(paths["sft"])
  assert examples == synthetic.sft_examples(task.train_prompts, 50, seed="sft/5")
  comparisons = data.read_comparisons(paths["comparisons"])
  assert len(comparisons) == 20 and all(isinstance(c, data.Comparison) for c in comparisons)
  again = synthetic.write_default_task(str(tmp_path / "again"), 5, 50, 20)
  for name, path in paths.items():
    assert open(path).read() == open(again[name]).read(), name


def test_readers_accept_both_sft_shapes(tmp_path):
  path = tmp_path / "sft.jsonl"
  rows = [{"text": "Just text."}, {"prompt": "Q:", "completion": " A.", "id": 7}]
  path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
  assert data.read_sft(str(path)) == [data.SFTExample("", "Just text."), ("Q:", " A.")]


@pytest.mark.parametrize(
  "lines, reader, message",
  [
    (['{"prompt": "a"}', "{not json"], data.read_prompts, r":2: not valid JSON"),
    (['{"prompt": "a"}', "", '["a"]'], data.read_prompts, r":3: expected a JSON object"),
    (['{"text": "a"}', '{"prompt": "a"}'], data.read_sft, r":2: missing field 'completion'"),
    (['{"text": "a"}', '{"body": "a"}'], data.read_sft, r":2: an SFT row needs 'text'"),
    (['{"prompt": "a", "chosen": "b"}'], data.read_comparisons, r":1: missing field 'rejected'"),
    (['{"prompt": 3}'], data.read_prompts, r":1: field 'prompt' must be a string"),
    ([""], data.read_prompts, "holds no rows"),
  ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path, lines, reader, message):
  path = tmp_path / "rows.jsonl"
  path.write_text("\n".join(lines) + "\n")
  with pytest.raises(ValueError, match=message) as error:
    reader(str(path))
  assert str(path) in str(error.value)


def test_missing_jsonl_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothing.jsonl"):
    data.read_comparisons(str(tmp_path / "nothing.jsonl"))


def test_sft_batch_marks_completion_and_eos_as_targets():
  bos, eos, pad = BYTES.bos_id, BYTES.eos_id, BYTES.pad_id
  examples = [data.SFTExample("ab", "c"), data.SFTExample("", "xyz")]
  batch = data.sft_batch(BYTES, examples, length=6)
  a, b, c, x, y, z = (ord(ch) for ch in "abcxyz")
  np.testing.assert_array_equal(batch.tokens, [[bos, a, b, c, eos, pad], [bos, x, y, z, eos, pad]])
  np.testing.assert_array_equal(batch.mask, [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0]])
  np.testing.assert_array_equal(batch.target_mask, [[0, 0, 0, 1, 1, 0], [0, 1, 1, 1, 1, 0]])
  cut = data.sft_batch(BYTES, examples, length=4)  # keeps the first 4 tokens
  np.testing.assert_array_equal(cut.tokens, [[bos, a, b, c], [bos, x, y, z]])
  np.testing.assert_array_equal(cut.target_mask, [[0, 0, 0, 1], [0, 1, 1, 1]])
  assert data.count_truncated(BYTES, examples, 4) == 2
  assert data.count_truncated(BYTES, examples, 5) == 0
