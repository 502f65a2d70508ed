"""Best-of-n: sample n completions of each prompt, keep the one the reward scores highest.

  y_1 .. y_n ~ π(· | x)            sampling.sample with keys split(key, n)
  y* = argmax_i score(x, y_i)      ties: the first
  KL(π_best-of-n ‖ π) = log n - (n - 1) / n

The KL is that of the best-of-n distribution relative to the sampling distribution π (at
the temperature, top-k and top-p used) when the n scores are almost surely distinct;
with ties (a discrete score, the same completion drawn twice) it is an upper bound
(Beirami et al. 2024, arXiv 2401.01879). Stiennon et al. 2020 (arXiv 2009.01325,
appendix) give the formula; Gao et al. 2022 (arXiv 2210.10760) plot the gold reward of
best-of-n and of RL against d = sqrt(KL) with it. It needs no sample: it is 0 at n = 1,
log 2 - 1/2 ≈ 0.19 at n = 2 and grows as log n.

The n samples are drawn in one batch (`jax.vmap` over the keys), each with its own key,
so they are the n calls `sampling.sample(..., key_i, ...)` would make.
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rlhf_jax.lm import sampling
from rlhf_jax.lm.model import Model


class BestOfN(NamedTuple):
  completion: sampling.Completion  # the chosen sample of each prompt: [B, N] fields
  score: jax.Array  # float32 [B]: its score
  scores: jax.Array  # float32 [n, B]: every sample's (sample i drawn with split(key, n)[i])
  index: jax.Array  # int32 [B]: which sample was chosen
  kl: jax.Array  # float32 []: log n - (n - 1) / n


def best_of_n_kl(n: int) -> float:
  """KL(best-of-n ‖ π) = log n - (n - 1) / n nats (see the module doc)."""
  if n < 1:
    raise ValueError(f"n={n}; best-of-n needs at least one sample.")
  return math.log(n) - (n - 1) / n


def best_of_n(
  model: Model,
  params,
  key,
  prompts,
  prompt_mask,
  n: int,
  score_fn: Callable,
  score_params=None,
  *,
  max_new_tokens: int,
  temperature=1.0,
  top_k: int | None = None,
  top_p=1.0,
  eos_id: int | None = None,
) -> BestOfN:
  """The highest-scoring of n samples per prompt [B, Tp]. `score_fn(score_params,
  prompts, prompt_mask, tokens, mask) -> [B]` as `rm.py` describes; the sampling
  arguments are `sampling.sample`'s. Pure: jit it with `model`, `n`, `score_fn`,
  `max_new_tokens`, `top_k` and `eos_id` static."""
  kl = best_of_n_kl(n)
  batch_size = prompts.shape[0]

  def draw(key_sample):
    completion = sampling.sample(
      model,
      params,
      key_sample,
      prompts,
      prompt_mask,
      max_new_tokens,
      temperature,
      top_k,
      top_p,
      eos_id,
    )
    score = score_fn(score_params, prompts, prompt_mask, completion.tokens, completion.mask)
    if score.shape != (batch_size,):
      raise ValueError(f"score_fn returned shape {score.shape}; expected ({batch_size},).")
    return completion, score.astype(jnp.float32)

  samples, scores = jax.vmap(draw)(jax.random.split(key, n))  # [n, B, ...], [n, B]
  index = jnp.argmax(scores, axis=0).astype(jnp.int32)
  chosen = lambda x: x[index, jnp.arange(batch_size)]
  return BestOfN(
    completion=jax.tree.map(chosen, samples),
    score=chosen(scores),
    scores=scores,
    index=index,
    kl=jnp.asarray(kl, jnp.float32),
  )
