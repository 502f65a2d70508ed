"""SFT: the loss against a NumPy cross-entropy, the schedule and one Adam step by hand,
and a tiny run on the default task whose loss falls below the corpus's unigram entropy."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from rlhf_jax.lm import config as config_lib
from rlhf_jax.lm import data, model, sft, sft_main, weights
from rlhf_jax.lm.tokenizer import ByteTokenizer
from tests.references import tensorboard_scalars

CONFIG = model.SIZES["tiny"]  # V 97, P 32, D 32, 2 layers, 4 heads
MODEL = model.make_model(CONFIG)
_apply = jax.jit(MODEL.apply)
_loss = jax.jit(sft.sft_loss, static_argnums=0)


def train_config(**overrides) -> ConfigDict:
  config = config_lib.default_config().train
  config.update(overrides)
  return config


def masked_batch():
  """Row 0: a 3-token prompt, then 4 targets; row 1: no prompt but BOS, 4 targets, then
  2 padding tokens."""
  tokens = np.random.default_rng(0).integers(0, CONFIG.vocab_size, (2, 7)).astype(np.int32)
  mask = np.array([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]], bool)
  target_mask = np.array([[0, 0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 1, 0, 0]], bool)
  return data.SFTBatch(tokens, mask, target_mask)


def numpy_cross_entropy(logits, tokens, target_mask):
  """Mean over targets t of -log softmax(logits[b, t - 1])[tokens[b, t]], in float64."""
  logits = np.asarray(logits, np.float64)
  losses, hits = [], []
  for b, t in zip(*np.nonzero(target_mask), strict=True):
    assert t >= 1
    row = logits[b, t - 1]
    log_z = row.max() + np.log(np.sum(np.exp(row - row.max())))
    losses.append(log_z - row[tokens[b, t]])
    hits.append(np.argmax(row) == tokens[b, t])
  return np.mean(losses), np.mean(hits), len(losses)


def test_loss_equals_numpy_cross_entropy_over_completion_tokens():
  params = MODEL.init(jax.random.key(1))
  batch = masked_batch()
  loss, metrics = _loss(MODEL, params, batch)
  logits = _apply(params, batch.tokens, batch.mask)
  expected_loss, expected_accuracy, count = numpy_cross_entropy(
    logits, batch.tokens, batch.target_mask
  )
  assert count == 8
  np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
  np.testing.assert_allclose(metrics["accuracy"], expected_accuracy)
  assert metrics["target_tokens"] == 8 and metrics["tokens"] == 12
  # Padding tokens are in no target and no context: changing them changes nothing.
  tokens = batch.tokens.copy()
  tokens[1, 5:] = (tokens[1, 5:] + 1) % CONFIG.vocab_size
  loss_again, _ = _loss(MODEL, params, batch._replace(tokens=tokens))
  np.testing.assert_allclose(loss_again, loss, rtol=1e-6)


def test_uniform_logits_cost_log_vocab():
  # A stand-in model with all-zero logits: every target costs log V, whatever it is.
  vocab = 11
  uniform = model.Model(
    config=CONFIG._replace(vocab_size=vocab),
    init=None,
    apply=lambda params, tokens, mask: jnp.zeros(tokens.shape + (vocab,)),
    init_cache=None,
    extend=None,
    unembed=None,
  )
  batch = masked_batch()
  batch = batch._replace(tokens=batch.tokens % vocab)
  loss, metrics = sft.sft_loss(uniform, None, batch)
  np.testing.assert_allclose(loss, math.log(vocab), rtol=1e-6)
  # argmax of equal logits is token 0: accuracy is the share of targets that are 0.
  expected = np.mean(batch.tokens[batch.target_mask] == 0)
  np.testing.assert_allclose(metrics["accuracy"], expected)


def test_learning_rate_schedule_by_hand():
  config = train_config(
    learning_rate=1.0, warmup_steps=10, steps=110, schedule="cosine", end_learning_rate_fraction=0.1
  )
  schedule = sft.make_learning_rate(config)
  # Linear from 0 to the peak over 10 steps, then a half cosine from 1 down to 0.1.
  cosine = lambda done: 0.1 + 0.9 * (1 + math.cos(math.pi * done)) / 2
  for step, expected in [(0, 0.0), (5, 0.5), (10, 1.0), (35, cosine(0.25)), (60, 0.55), (110, 0.1)]:
    np.testing.assert_allclose(schedule(step), expected, rtol=1e-5, atol=1e-7)
  constant_config = train_config(learning_rate=0.3, warmup_steps=0, schedule="constant")
  constant = sft.make_learning_rate(constant_config)
  assert float(constant(0)) == pytest.approx(0.3) and float(constant(10**6)) == pytest.approx(0.3)


def test_first_step_moves_each_parameter_by_the_learning_rate():
  # Adam's first step is lr · m̂ / (sqrt(v̂) + eps) = lr · g / (|g| + eps) ≈ lr · sign(g).
  learning_rate = 1e-3
  config = train_config(
    learning_rate=learning_rate,
    warmup_steps=0,
    schedule="constant",
    max_grad_norm=0.0,
    weight_decay=0.0,
  )
  trainer = sft.make_sft(config, MODEL)
  state = trainer.init(jax.random.key(2))
  batch = masked_batch()
  grads = jax.jit(jax.grad(lambda p: trainer.loss(p, batch)[0]))(state.params)
  new_state, metrics = jax.jit(trainer.step)(state, batch, jax.random.key(3))
  assert int(new_state.step) == 1
  np.testing.assert_allclose(metrics["learning_rate"], learning_rate)
  for old, new, grad in zip(
    jax.tree.leaves(state.params),
    jax.tree.leaves(new_state.params),
    jax.tree.leaves(grads),
    strict=True,
  ):
    grad = np.asarray(grad)
    large = np.abs(grad) > 1e-4  # where eps = 1e-8 does not matter
    np.testing.assert_allclose(
      (np.asarray(new) - np.asarray(old))[large], -learning_rate * np.sign(grad[large]), rtol=1e-3
    )


def test_validate_names_the_key():
  config = config_lib.default_config()
  config.train.schedule = "linear"
  with pytest.raises(ValueError, match="config.train.schedule"):
    config_lib.validate(config)
  config = config_lib.default_config()
  config.data.sequence_length = 300
  with pytest.raises(ValueError, match="config.data.sequence_length=300 exceeds"):
    config_lib.validate(config)
  config = config_lib.default_config()
  config.data.sft_path = "/no/such/file.jsonl"
  with pytest.raises(ValueError, match="config.data.sft_path"):
    config_lib.validate(config)


def unigram_entropy(batch: data.SFTBatch) -> float:
  """Entropy (nats) of the target tokens' frequencies: the loss of the best model that
  ignores context."""
  counts = np.bincount(batch.tokens[batch.target_mask])
  p = counts[counts > 0] / counts.sum()
  return float(-np.sum(p * np.log(p)))


def test_tiny_sft_learns_the_default_task(tmp_path):
  config = config_lib.default_config()
  config.model.size = "tiny"
  config.model.n_positions = 64
  config.data.sequence_length = 64
  config.data.num_sft_examples = 2000
  config.train.steps = 200
  config.train.batch_size = 16
  config.train.learning_rate = 3e-3
  config.train.warmup_steps = 20
  config.log_every = 50
  config.sample.num_prompts = 2
  config.sample.max_new_tokens = 8
  workdir = str(tmp_path / "run")
  lines = []

  class Lines:
    write = lines.append
    flush = staticmethod(lambda: None)

  result = sft_main.train_sft(config, workdir, stream=Lines())

  tokenizer = ByteTokenizer()
  examples = data.read_sft(os.path.join(workdir, "data", "sft.jsonl"))[:128]
  held = data.sft_batch(tokenizer, examples, 64)
  loss, _ = _loss(result.model, result.state.params, held)
  first_logged = result.records[0]["loss"]
  # The uniform distribution costs log 259 = 5.56 nats; the corpus's byte frequencies
  # alone about 2.9. Within 200 steps the model must use the context.
  entropy = unigram_entropy(held)
  assert 2.5 < entropy < 3.5
  assert float(loss) < entropy - 0.3, (float(loss), entropy, first_logged)
  assert float(loss) < 0.5 * math.log(tokenizer.vocab_size)

  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [row["step"] for row in rows[:4]] == [50, 100, 150, 200]
  assert {"loss", "accuracy", "tokens_per_second", "elapsed"} <= set(rows[0])
  assert "sample_gold" in rows[-1] and len(result.samples) == 2
  logged = tensorboard_scalars(os.path.join(workdir, "tensorboard"))
  assert [step for step, _ in logged["sft/loss"]] == [50, 100, 150, 200]
  np.testing.assert_allclose([v for _, v in logged["sft/loss"]], [r["loss"] for r in rows[:4]])
  assert logged["sft/sample_gold"] == [(200, pytest.approx(rows[-1]["sample_gold"]))]
  printed = "".join(lines)
  assert "step    200" in printed and "[gold " in printed
  _, saved = weights.load_gpt2(os.path.join(workdir, "model"))
  for ours, theirs in zip(
    jax.tree.leaves(result.state.params), jax.tree.leaves(saved), strict=True
  ):
    np.testing.assert_array_equal(ours, theirs)
