"""Direct preference optimization (Rafailov et al. 2023, arXiv 2305.18290) on comparisons.

  Δ(y) = log π_θ(y | x) - log π_ref(y | x)            sums over y's real tokens
  loss = BT cross-entropy of the label on β Δ(y₁) - β Δ(y₂)
       = -log σ(β (Δ(y_w) - Δ(y_l)))                  for a strict label (paper eq. 7)

The reference is frozen: its log-probabilities come from a forward pass of its own
parameters in every step, under stop_gradient. Labels are those of `rm.Comparisons`
(1: the first completion preferred, 0: the second, 0.5: a tie), so the reward model and
DPO learn from the same batches. `label_smoothing` ε moves each label ε toward the other
answer, y' = (1 - ε) y + ε (1 - y) (conservative DPO); ε = 0 is the paper's loss.

The implicit reward β Δ(y) of a completion is what DPO's policy says the reward is; the
metrics report it for the preferred and the other completion of strict pairs.
Everything here is pure; jit it at the call site.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from rlhf_jax import reward_model
from rlhf_jax.lm import losses
from rlhf_jax.lm.model import Model
from rlhf_jax.lm.rm import Comparisons, as_sequences, copy_tree
from rlhf_jax.lm.sft import make_optimizer


def default_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.beta = 0.1  # the paper's usual value
  config.label_smoothing = 0.0
  config.learning_rate = 1e-6  # the paper's Adam (RMSprop there) rate for GPT-2-size and up
  config.max_grad_norm = 1.0  # 0 disables clipping
  return config


@flax.struct.dataclass
class DPOState:
  params: Any  # the policy's transformer
  reference_params: Any  # frozen
  optimizer_state: optax.OptState
  steps: jax.Array  # int32 []


class DPO(NamedTuple):
  init: Callable  # (policy_params, reference_params=None) -> DPOState
  step: Callable  # (state, Comparisons, key=None) -> (state, metrics)
  evaluate: Callable  # (state, Comparisons) -> metrics of held-out pairs


def pair_log_probs(model: Model, params, batch: Comparisons):
  """(log π(y₁ | x), log π(y₂ | x)): [B] each, from one forward over the 2B sequences."""
  sequences = as_sequences(batch)
  token_log_probs = losses.token_log_probs(model, params, *sequences)
  log_probs = losses.sequence_log_probs(token_log_probs, sequences[-1])  # [2B]
  size = batch.prompts.shape[0]
  return log_probs[:size], log_probs[size:]


def make_dpo(model: Model, config: ml_collections.ConfigDict) -> DPO:
  """Builds DPO's pure functions; `config` as `default_config()`.

  step(state, batch, key) takes one Adam step on the mean DPO loss of `batch`
  (`batch.weights` [B], if given, weighs the pairs). Metrics: dpo_loss; over the strict
  pairs, dpo_accuracy (how often the preferred completion's implicit reward is the
  larger), dpo_margin (its mean excess), dpo_chosen_reward and dpo_rejected_reward (the
  mean implicit rewards of the preferred and the other completion); dpo_grad_norm.
  `key` is unused (no dropout). evaluate(state, batch) gives the same metrics but the
  gradient norm, every pair weighted 1.
  """
  optimizer = make_optimizer(config.learning_rate, config.max_grad_norm)
  beta = config.beta

  def init(policy_params, reference_params=None) -> DPOState:
    params = copy_tree(policy_params)
    reference = copy_tree(policy_params if reference_params is None else reference_params)
    return DPOState(params, reference, optimizer.init(params), jnp.zeros((), jnp.int32))

  def loss_fn(params, reference_params, batch: Comparisons):
    first, second = pair_log_probs(model, params, batch)
    ref_first, ref_second = jax.lax.stop_gradient(pair_log_probs(model, reference_params, batch))
    labels = jnp.asarray(batch.labels, jnp.float32)
    smoothed = (1 - config.label_smoothing) * labels + config.label_smoothing * (1 - labels)
    # dpo_losses with smoothing 1 - y' is the Bradley–Terry cross-entropy of label y'.
    pair_losses = losses.dpo_losses(first, second, ref_first, ref_second, beta, 1 - smoothed)
    weights = jnp.ones_like(labels) if batch.weights is None else batch.weights
    loss = reward_model.weighted_mean(pair_losses, weights, axis=0)

    reward_first = losses.dpo_implicit_reward(first, ref_first, beta)
    reward_second = losses.dpo_implicit_reward(second, ref_second, beta)
    first_preferred = labels > 0.5
    chosen = jnp.where(first_preferred, reward_first, reward_second)
    rejected = jnp.where(first_preferred, reward_second, reward_first)
    strict = weights * (labels != 0.5)
    strict_mean = lambda x: reward_model.weighted_mean(x, strict, axis=0)
    return loss, {
      "dpo_loss": loss,
      "dpo_accuracy": strict_mean(1.0 * (chosen > rejected)),
      "dpo_margin": strict_mean(chosen - rejected),
      "dpo_chosen_reward": strict_mean(chosen),
      "dpo_rejected_reward": strict_mean(rejected),
    }

  def step(state: DPOState, batch: Comparisons, key=None):
    del key
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (_, metrics), grads = grad_fn(state.params, state.reference_params, batch)
    updates, optimizer_state = optimizer.update(grads, state.optimizer_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, dpo_grad_norm=optax.tree.norm(grads))
    return state.replace(
      params=params, optimizer_state=optimizer_state, steps=state.steps + 1
    ), metrics

  def evaluate(state: DPOState, batch: Comparisons):
    return loss_fn(state.params, state.reference_params, batch._replace(weights=None))[1]

  return DPO(init=init, step=step, evaluate=evaluate)
