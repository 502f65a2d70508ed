"""Measuring a policy on held-out prompts: gold reward, proxy reward, KL to the reference.

  y ~ π(· | x)   one completion of each eval prompt x, with the same key at every call
                 (two policies are compared on the same prompts and random numbers)
  gold           the task's gold reward of (x, y) on the host (the default task's
                 `gold.gold_reward`; None for a user's task, which has no gold)
  proxy          the reward model's (normalized) score of (x, y), when one is given
  kl             mean over prompts of Σ_n log π(y_n) - log π_ref(y_n): the one-sample
                 estimate of KL(π ‖ π_ref) per sequence in nats that Ziegler et al.'s
                 penalty and controller use; π is softmax(logits / τ) for both models
  best of n      the same measures of the n samples' highest-scoring one, its KL the
                 analytic log n - (n - 1) / n (`best_of_n.py`)

Host side: it jits the sampling and scoring once per Evaluator and returns Python
floats and the sample texts.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax.lm import best_of_n, data, heads, losses, sampling
from rlhf_jax.lm.model import Model
from rlhf_jax.lm.tokenizer import Tokenizer


class Evaluation(NamedTuple):
  metrics: dict  # gold, gold_std, form (default task), proxy, kl, completion_length
  samples: list  # (prompt, completion, gold or None) per eval prompt


class Evaluator:
  """Scores policies on `prompts` (see the module doc). `score_fn(score_params, prompts,
  prompt_mask, tokens, mask) -> [B]` is the proxy reward (`rm.make_score_fn`) or None;
  `gold_fn(prompt, completion) -> float` the gold one or None."""

  def __init__(
    self,
    model: Model,
    tokenizer: Tokenizer,
    prompts: list[str],
    reference_params,
    *,
    max_new_tokens: int,
    temperature: float,
    key,
    gold_fn: Callable | None = None,
    score_fn: Callable | None = None,
    score_params=None,
  ):
    self.prompts, self.tokenizer, self.gold_fn = prompts, tokenizer, gold_fn
    self.reference_params, self.score_fn, self.score_params = (
      reference_params,
      score_fn,
      score_params,
    )
    self.key, self.temperature = key, temperature
    encoded_length = max(len(data.encode_prompt(tokenizer, p)) for p in prompts)
    length = max(1, min(encoded_length, model.config.n_positions - max_new_tokens))
    self.prompt_tokens, self.prompt_mask = data.prompt_arrays(tokenizer, prompts, length)
    sample_options = dict(
      max_new_tokens=max_new_tokens, temperature=temperature, eos_id=tokenizer.eos_id
    )

    def sample(params, key, prompts, prompt_mask):
      return sampling.sample(model, params, key, prompts, prompt_mask, **sample_options)

    def sequence_kl(params, reference_params, prompts, prompt_mask, tokens, mask):
      def log_probs(p):
        logits, _ = heads.completion_forward(model, p, prompts, prompt_mask, tokens, mask)
        return losses.gather_log_probs(logits / temperature, tokens)

      difference = log_probs(params) - log_probs(reference_params)
      return jnp.sum(jnp.where(mask, difference, 0.0), axis=-1)

    def best(params, key, prompts, prompt_mask, n, score_params):
      chosen = best_of_n.best_of_n(
        model, params, key, prompts, prompt_mask, n, score_fn, score_params, **sample_options
      )
      return chosen.completion

    self._sample = jax.jit(sample)
    self._sequence_kl = jax.jit(sequence_kl)
    self._score = None if score_fn is None else jax.jit(score_fn)
    self._best = jax.jit(best, static_argnames="n")

  def __call__(self, params) -> Evaluation:
    """The policy `params` (a transformer's) measured on the eval prompts."""
    completion = self._sample(params, self.key, self.prompt_tokens, self.prompt_mask)
    kl = self._sequence_kl(
      params, self.reference_params, self.prompt_tokens, self.prompt_mask, *completion[:2]
    )
    return self._measure(completion.tokens, completion.mask, float(jnp.mean(kl)))

  def best_of_n(self, params, n: int, batch_size: int = 32) -> Evaluation:
    """Best-of-n of `params` by the proxy reward, `batch_size` prompts at a time."""
    if self.score_fn is None:
      raise ValueError("best-of-n needs a reward model to choose by; none was given.")
    tokens, masks = [], []
    for start in range(0, len(self.prompts), batch_size):
      rows = slice(start, start + batch_size)
      key = jax.random.fold_in(self.key, start)
      prompts, mask = self.prompt_tokens[rows], self.prompt_mask[rows]
      completion = self._best(params, key, prompts, mask, n, self.score_params)
      tokens.append(np.asarray(completion.tokens))
      masks.append(np.asarray(completion.mask))
    return self._measure(np.concatenate(tokens), np.concatenate(masks), best_of_n.best_of_n_kl(n))

  def _measure(self, tokens, mask, kl: float) -> Evaluation:
    texts = data.decode_completions(self.tokenizer, tokens, mask)
    metrics = {"kl": kl, "completion_length": float(np.mean(np.sum(mask, axis=-1)))}
    golds = [None] * len(texts)
    if self.gold_fn is not None:
      golds = [self.gold_fn(p, t) for p, t in zip(self.prompts, texts, strict=True)]
      metrics.update(gold=float(np.mean(golds)), gold_std=float(np.std(golds)))
    if self._score is not None:
      scores = self._score(self.score_params, self.prompt_tokens, self.prompt_mask, tokens, mask)
      metrics["proxy"] = float(jnp.mean(scores))
    return Evaluation(metrics, list(zip(self.prompts, texts, golds, strict=True)))
