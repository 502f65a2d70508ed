"""Fitting a reward model to comparisons of completions, and turning it into a reward.

  params = {"transformer": an SFT model's parameters, "head": a fresh scalar head}
  score(x, y) = head(h at the last real token of prompt x + completion y)   [B] or [B, E]
  loss = Bradley–Terry on score(x, y₁) - score(x, y₂) against labels in {0, 0.5, 1}
                                            (Stiennon et al. 2020, arXiv 2009.01325, eq. 1)
  after the fit: gain · score + bias has mean 0 and std 1 over completions the SFT policy
  samples, folded into the head            (Ziegler et al. 2019, arXiv 1909.08593, §2.2)

An ensemble is E heads on one trunk (`ensemble_size=E`, `heads.py` says what that
shares); each member fits its own bootstrap weights ([B, E], `bootstrap_weights`), and
`make_score_fn` turns the members' scores into one reward: their mean, or a conservative
mean - k · std (k = `ensemble_penalty`).

A reward function, as token PPO and best-of-n take it, is a pure

  score_fn(score_params, prompt_tokens [B, Tp], prompt_mask [B, Tp], tokens [B, N], mask [B, N])
    -> float32 [B]

with its parameters passed in rather than closed over: under jit, closed-over arrays
become constants of the compiled program (hundreds of MB for GPT-2) and could not change
between calls. A program that needs no parameters (a gold reward) ignores its first
argument. Everything here is pure; jit it at the call site.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from rlhf_jax.lm import heads, losses
from rlhf_jax.lm.model import Model
from rlhf_jax.lm.sft import make_optimizer


def default_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.learning_rate = 1e-5  # Adam; Stiennon et al. used 1.5e-5 for their 1.3B model
  config.max_grad_norm = 1.0  # 0 disables clipping
  config.ensemble_size = None  # None: one head, scores [B]; E: E heads, scores [B, E]
  config.head_std = None  # the head's initial kernel std (None: 1/sqrt(D + 1))
  config.noise = 0.0  # Bradley–Terry with a teacher who answers at random w.p. `noise`
  # The trunk: the SFT model's first `layers` blocks (0: all of them), a smaller reward
  # model than the policy (experiments/overoptimization.py varies it).
  config.layers = 0
  return config


class Comparisons(NamedTuple):
  """A batch of B comparisons of two completions of the same prompt."""

  prompts: jax.Array  # int [B, Tp], left-padded
  prompt_mask: jax.Array  # bool [B, Tp]
  first: jax.Array  # int [B, N], right-padded
  first_mask: jax.Array  # bool [B, N]
  second: jax.Array  # int [B, N], right-padded
  second_mask: jax.Array  # bool [B, N]
  labels: jax.Array  # float32 [B]: P(first ≻ second) as labelled: 1, 0 or 0.5 (a tie)
  weights: jax.Array | None = None  # float32 [B] or [B, E] (bootstrap); None: all 1


def as_sequences(batch: Comparisons) -> tuple[jax.Array, ...]:
  """The B pairs as 2B sequences, the first completions then the second: (prompts,
  prompt_mask, completions, completion_mask), each [2B, ...], for one forward pass."""
  both = lambda x, y: jnp.concatenate([x, y], axis=0)
  return (
    both(batch.prompts, batch.prompts),
    both(batch.prompt_mask, batch.prompt_mask),
    both(batch.first, batch.second),
    both(batch.first_mask, batch.second_mask),
  )


def pair_scores(model: Model, params, batch: Comparisons):
  """(scores of the first completions, scores of the second): [B] or [B, E] each, from
  one forward pass over the 2B sequences."""
  scores = heads.completion_scores(model, params, *as_sequences(batch))
  size = batch.prompts.shape[0]
  return scores[:size], scores[size:]


def bootstrap_weights(key, num_pairs: int, ensemble_size: int):
  """float32 [num_pairs, E] Poisson(1) counts: each member's bootstrap resample of the
  pairs (draw once per pair and keep it with the pair). Weight 0 (1/e of them) leaves a
  pair out of that member's fit, so it is that member's held-out data."""
  return jax.random.poisson(key, 1.0, (num_pairs, ensemble_size)).astype(jnp.float32)


def copy_tree(tree):
  """New buffers with the same values, so that a state can be donated to a jitted step
  without deleting the caller's arrays (or two fields sharing one buffer)."""
  return jax.tree.map(jnp.array, tree)


@flax.struct.dataclass
class RewardFitState:
  params: Any  # {"transformer", "head"}
  optimizer_state: optax.OptState
  steps: jax.Array  # int32 []: updates taken


class RewardFit(NamedTuple):
  init: Callable  # (key, sft_params or a reward model's params) -> RewardFitState
  step: Callable  # (state, Comparisons, key=None) -> (state, metrics)
  evaluate: Callable  # (params, Comparisons) -> metrics on held-out pairs


def make_reward_fit(model: Model, config: ml_collections.ConfigDict) -> RewardFit:
  """Builds the reward-model fit's pure functions; `config` as `default_config()`.

  step(state, batch, key) takes one Adam step on the Bradley–Terry loss of `batch` and
  returns metrics rm_loss (the members' mean), rm_accuracy (on strict labels) and
  rm_grad_norm. `key` is unused (the model has no dropout); it keeps the step signature
  of the other learners. evaluate(params, batch) gives rm_loss and rm_accuracy of
  held-out comparisons, every pair weighted 1.
  """
  optimizer = make_optimizer(config.learning_rate, config.max_grad_norm)

  def init(key, sft_params) -> RewardFitState:
    if "head" in sft_params:  # a reward model already: continue fitting it
      params = sft_params
    else:
      params = heads.with_head(
        key, copy_tree(sft_params), model.config.n_embd, config.ensemble_size, config.head_std
      )
    return RewardFitState(params, optimizer.init(params), jnp.zeros((), jnp.int32))

  def loss_fn(params, batch: Comparisons):
    scores_first, scores_second = pair_scores(model, params, batch)
    return losses.reward_model_loss(
      scores_first, scores_second, batch.labels, config.noise, batch.weights
    )

  def step(state: RewardFitState, batch: Comparisons, key=None):
    del key
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
    updates, optimizer_state = optimizer.update(grads, state.optimizer_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, rm_grad_norm=optax.tree.norm(grads))
    return RewardFitState(params, optimizer_state, state.steps + 1), metrics

  def evaluate(params, batch: Comparisons):
    return loss_fn(params, batch._replace(weights=None))[1]

  return RewardFit(init=init, step=step, evaluate=evaluate)


def normalize(model: Model, params, prompts, prompt_mask, tokens, mask):
  """The reward model with its scores normalized over a sample: params whose head gives
  gain · score + bias, with mean 0 and std 1 (per member) over the completions tokens
  [S, N] (mask [S, N]) of prompts [S, Tp]. Ziegler et al. normalize over completions
  the SFT policy samples (`sampling.sample`) before RL starts, so the KL coefficient β
  means the same whatever the reward model's scale. Returns (params, (gain, bias))."""
  scores = heads.completion_scores(model, params, prompts, prompt_mask, tokens, mask)
  gain, bias = losses.score_normalization(scores)
  return {**params, "head": heads.fold_normalization(params["head"], gain, bias)}, (gain, bias)


def aggregate_ensemble(scores, ensemble_penalty: float = 0.0):
  """One score per completion [B] from scores [B] (returned as they are) or a member per
  column [B, E]: mean_e - k · std_e (population std), k = `ensemble_penalty`. k = 0 is
  the ensemble mean; k > 0 a pessimistic reward that pays less where the members
  disagree, which is where the policy can exploit the model (Coste et al. 2023, arXiv
  2310.02743, "uncertainty-weighted optimization")."""
  if scores.ndim == 1:
    return scores
  return jnp.mean(scores, axis=-1) - ensemble_penalty * jnp.std(scores, axis=-1)


def make_score_fn(model: Model, ensemble_penalty: float = 0.0) -> Callable:
  """The reward model as a reward function: score_fn(rm_params, prompts, prompt_mask,
  tokens, mask) -> float32 [B], an ensemble's members aggregated by `aggregate_ensemble`.
  Pass params normalized by `normalize`."""

  def score_fn(params, prompts, prompt_mask, tokens, mask):
    scores = heads.completion_scores(model, params, prompts, prompt_mask, tokens, mask)
    return aggregate_ensemble(scores, ensemble_penalty)

  return score_fn
