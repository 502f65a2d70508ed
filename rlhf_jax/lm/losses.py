"""Losses and small pure steps for RL from human preferences on language models.

  reward model   BT on scores of chosen/rejected completions     (Stiennon et al. 2020)
  KL penalty     r_n = -β (log π(y_n) - log π_ref(y_n)), + score at the last real token
                                                                 (Ziegler et al. 2019)
  KL controller  fixed β, or Ziegler's proportional controller toward a target KL
  GAE            over completion tokens, bootstrapping 0 after the last real token
  token PPO      clipped surrogate per token, clipped value loss, entropy bonus
  DPO            -log σ(β (Δ_chosen - Δ_rejected)), Δ = log π - log π_ref of a sequence
                                                                 (Rafailov et al. 2023)

Shapes: B sequences, N completion tokens (right-padded: `mask` [B, N] is 1 on real
tokens, which come first), V the vocabulary. Every mean over tokens is over the real
tokens of the batch; padding contributes 0 and gets no gradient. A policy step's
log-probs come from `token_log_probs` (one forward over prompt + completion) or, at
sampling time, from `sampling.Completion.log_probs`, which are the same numbers.
Everything here is pure; jit it at the call site.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rlhf_jax import ppo, reward_model
from rlhf_jax.lm.heads import completion_forward
from rlhf_jax.lm.model import Model


def masked_mean(values, mask, axis=None):
  """Σ mask · values / Σ mask over `axis` (all axes by default); 0 where mask is all 0."""
  total = jnp.sum(jnp.where(mask, values, 0.0), axis=axis)
  return total / jnp.maximum(jnp.sum(mask, axis=axis, dtype=jnp.float32), 1)


def whiten(values, mask, shift_mean: bool = True, epsilon: float = 1e-8):
  """(values - μ) / sqrt(σ² + ε) with μ, σ² the mean and (biased) variance over the
  real entries of the whole batch; padding gets 0. `shift_mean=False` adds μ back,
  rescaling only (as one whitens rewards without moving their mean)."""
  mean = masked_mean(values, mask)
  variance = masked_mean(jnp.square(values - mean), mask)
  whitened = (values - mean) * jax.lax.rsqrt(variance + epsilon)
  if not shift_mean:
    whitened = whitened + mean
  return jnp.where(mask, whitened, 0.0)


# Log-probabilities of given completions.


def gather_log_probs(logits, tokens):
  """log softmax(logits)[token]: float32 [...] from logits [..., V] and tokens [...]."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]


def token_entropy(logits):
  """H(softmax(logits)) = -Σ_v p_v log p_v: float32 [...] from logits [..., V]."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)


def token_log_probs(
  model: Model, params, prompt_tokens, prompt_mask, completion_tokens, completion_mask
):
  """log π(y_n | x, y_<n): float32 [B, N] of completion tokens [B, N] (right-padded)
  after prompts [B, Tp] (left-padded), from one forward pass over both; 0 at padding.
  `params` are the transformer's (a policy's or the reference model's)."""
  logits, _ = completion_forward(
    model, params, prompt_tokens, prompt_mask, completion_tokens, completion_mask
  )
  return jnp.where(completion_mask, gather_log_probs(logits, completion_tokens), 0.0)


def sequence_log_probs(log_probs, mask):
  """log π(y | x) = Σ_n mask_n log π(y_n | x, y_<n): [...] from [..., N]."""
  return jnp.sum(jnp.where(mask, log_probs, 0.0), axis=-1)


# The reward: the reward model's score and a KL penalty (Ziegler et al. 2019).


def last_token_one_hot(mask):
  """float32 [..., N]: 1 at each row's last real token; a row with none gets 0s."""
  mask = mask.astype(bool)
  length = mask.shape[-1]
  last = length - 1 - jnp.argmax(mask[..., ::-1], axis=-1)
  return jax.nn.one_hot(last, length) * jnp.any(mask, axis=-1, keepdims=True)


def kl_penalized_rewards(log_probs, ref_log_probs, mask, scores, beta):
  """Per-token rewards of completions under a KL penalty toward a reference model.

    kl_n = log π(y_n | x, y_<n) - log π_ref(y_n | x, y_<n)
    r_n  = -β kl_n + [n is the last real token] · score(x, y)

  Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences",
  arXiv 1909.08593, eq. 2: R(x, y) = r(x, y) - β log(π(y|x) / ρ(y|x)), its KL term spread
  over the tokens and the score paid at the end. Σ_n kl_n is a one-sample estimate of
  KL(π(·|x) ‖ π_ref(·|x)) when y was drawn from π.

  Args: log_probs, ref_log_probs float32 [B, N] of the sampled tokens; mask [B, N];
  scores float32 [B] (the reward model's, normalized); beta a scalar.
  Returns: (rewards [B, N], kl [B, N]), both 0 at padding.
  """
  kl = jnp.where(mask, log_probs - ref_log_probs, 0.0)
  rewards = -beta * kl + scores[..., None] * last_token_one_hot(mask)
  return rewards, kl


class KLControllerState(NamedTuple):
  beta: jax.Array  # float32 []: the KL coefficient


class KLController(NamedTuple):
  """An (init, update) pair: init() -> state; update(state, kl, n_steps) -> state."""

  init: Callable[[], KLControllerState]
  update: Callable[..., KLControllerState]


def fixed_kl(beta: float) -> KLController:
  """β stays `beta` whatever the KL."""
  init = lambda: KLControllerState(jnp.asarray(beta, jnp.float32))
  return KLController(init=init, update=lambda state, kl, n_steps: state)


def adaptive_kl(init_beta: float, target: float, horizon: float) -> KLController:
  """Ziegler et al. 2019 (arXiv 1909.08593, section 2.2) proportional controller:

    e = clip(KL / target - 1, -0.2, 0.2)
    β <- β (1 + e · n_steps / horizon)

  `kl` is the measured KL(π ‖ π_ref) of a batch: the mean over its sequences of Σ_n kl_n
  (`kl_penalized_rewards`); `n_steps` the sequences (episodes) it took. Ziegler et al.
  used target 6 (sentiment) or 10 nats with horizon 10,000.
  """

  def init():
    return KLControllerState(jnp.asarray(init_beta, jnp.float32))

  def update(state: KLControllerState, kl, n_steps) -> KLControllerState:
    proportional_error = jnp.clip(kl / target - 1, -0.2, 0.2)
    return KLControllerState(state.beta * (1 + proportional_error * n_steps / horizon))

  return KLController(init=init, update=update)


# Advantages.


def _gae_one_sequence(rewards, values, mask, gamma, lambda_):
  """GAE of one sequence [N]; padding is skipped, and after the last real token the
  value and advantage are 0 (the episode ends there)."""

  def backward(carry, step):
    next_value, next_advantage = carry
    reward, value, real = step
    delta = reward + gamma * next_value - value
    advantage = delta + gamma * lambda_ * next_advantage
    carry = (jnp.where(real, value, next_value), jnp.where(real, advantage, next_advantage))
    return carry, jnp.where(real, advantage, 0.0)

  zero = jnp.zeros((), values.dtype)
  _, advantages = jax.lax.scan(backward, (zero, zero), (rewards, values, mask), reverse=True)
  return advantages


def gae(rewards, values, mask, gamma, lambda_):
  """Generalized advantage estimation over completions (Schulman et al. 2016, arXiv
  1506.02438), the next real token after n being n' (n + 1 when right-padded):

    δ_n = r_n + γ V_n' - V_n                  V after the last real token = 0
    A_n = δ_n + γ λ A_n'                      A after the last real token = 0
    returns_n = A_n + V_n                     (the value targets)

  Args: rewards, values float32 [B, N]; mask [B, N]; gamma, lambda_ scalars (may be
  traced). Returns (advantages [B, N], returns [B, N]), 0 at padding. A reverse
  `lax.scan` over N per sequence, vmapped over B. No gradient flows to the values
  through the targets: they are stopped.
  """
  values = jax.lax.stop_gradient(values)
  mask = mask.astype(bool)
  advantages = jax.vmap(_gae_one_sequence, in_axes=(0, 0, 0, None, None))(
    rewards, values, mask, gamma, lambda_
  )
  return advantages, jnp.where(mask, advantages + values, 0.0)


# Token-level PPO (Schulman et al. 2017, arXiv 1707.06347; Ziegler et al. 2019).

# One token's -min(ρ A, clip(ρ, 1 - ε, 1 + ε) A): the control side's loss on scalars.
_token_surrogate = jnp.vectorize(ppo.clipped_surrogate_loss, excluded=(2,))


def token_policy_loss(log_probs, old_log_probs, advantages, mask, clip_epsilon):
  """-mean_n min(ρ_n A_n, clip(ρ_n, 1 - ε, 1 + ε) A_n), ρ_n = π(y_n) / π_old(y_n), the
  mean over real tokens; `ppo.clipped_surrogate_loss` per token. All [B, N]."""
  # Padding's ratio is 1 whatever its log-probs, so no inf or NaN can reach the gradient.
  ratio = jnp.exp(jnp.where(mask, log_probs - old_log_probs, 0.0))
  return masked_mean(_token_surrogate(ratio, advantages, clip_epsilon), mask)


def clipped_value_loss(values, old_values, returns, mask, clip_range):
  """½ mean_n max((V_n - R_n)², (clip(V_n, V_old,n - c, V_old,n + c) - R_n)²) over real
  tokens: the value moves at most c from the value it had when the batch was sampled,
  or is penalized as if it had not (Ziegler et al. 2019's code; trl's `PPOTrainer`). All
  [B, N]."""
  error = ppo.clipped_value_error(values, old_values, returns, clip_range)
  return 0.5 * masked_mean(error, mask)


def token_ppo_loss(
  log_probs,
  old_log_probs,
  advantages,
  values,
  old_values,
  returns,
  mask,
  clip_epsilon: float = 0.2,
  value_clip: float = 0.2,
  value_coefficient: float = 0.1,
  entropy=None,
  entropy_coefficient: float = 0.0,
):
  """PPO on tokens: policy_loss + c_v value_loss - c_H mean(entropy), all over real tokens.

  Args: log_probs, values [B, N] under the current parameters; old_log_probs,
  old_values [B, N] at sampling time; advantages, returns [B, N] (`gae`, whitened by
  the caller if wanted: `whiten`); mask [B, N]; entropy [B, N] or None
  (`token_entropy` of the logits). Returns (loss, metrics).
  """
  policy_loss = token_policy_loss(log_probs, old_log_probs, advantages, mask, clip_epsilon)
  value_loss = clipped_value_loss(values, old_values, returns, mask, value_clip)
  loss = policy_loss + value_coefficient * value_loss
  log_ratio = jnp.where(mask, log_probs - old_log_probs, 0.0)
  metrics = {
    "policy_loss": policy_loss,
    "value_loss": value_loss,
    # E[(ρ - 1) - log ρ] under π_old: a nonnegative estimate of KL(π_old ‖ π).
    "approx_kl": masked_mean(jnp.expm1(log_ratio) - log_ratio, mask),
    "clip_fraction": masked_mean(1.0 * (jnp.abs(jnp.expm1(log_ratio)) > clip_epsilon), mask),
  }
  if entropy is not None:
    mean_entropy = masked_mean(entropy, mask)
    loss = loss - entropy_coefficient * mean_entropy
    metrics["entropy"] = mean_entropy
  metrics["loss"] = loss
  return loss, metrics


# Direct preference optimization.


def dpo_implicit_reward(policy_log_probs, ref_log_probs, beta):
  """β (log π(y|x) - log π_ref(y|x)): DPO's implicit reward of sequences [...]."""
  return beta * (policy_log_probs - ref_log_probs)


def dpo_losses(
  policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, label_smoothing: float = 0.0
):
  """Per-pair DPO loss (Rafailov et al. 2023, arXiv 2305.18290, eq. 7):

    h = (log π(y_w|x) - log π_ref(y_w|x)) - (log π(y_l|x) - log π_ref(y_l|x))
    loss = -(1 - ε) log σ(β h) - ε log σ(-β h)

  ε = `label_smoothing` treats each label as flipped with probability ε (conservative
  DPO); ε = 0 is the paper's loss. This is the Bradley–Terry cross-entropy of label
  1 - ε on the implicit rewards, so it is `reward_model.bradley_terry_loss` on them.

  Args: sequence log-probs [...] (`sequence_log_probs`) of the chosen (y_w) and rejected
  (y_l) completions under the policy and the frozen reference. Returns losses [...].
  """
  return reward_model.bradley_terry_loss(
    dpo_implicit_reward(policy_chosen, ref_chosen, beta),
    dpo_implicit_reward(policy_rejected, ref_rejected, beta),
    1.0 - label_smoothing,
    noise=0,
  )


def dpo_loss(
  policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, label_smoothing: float = 0.0
):
  """The mean of `dpo_losses` over pairs [B], and metrics: the implicit rewards' mean
  margin and how often the chosen one's is larger (`reward_model.correct`)."""
  losses = dpo_losses(
    policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, label_smoothing
  )
  chosen = dpo_implicit_reward(policy_chosen, ref_chosen, beta)
  rejected = dpo_implicit_reward(policy_rejected, ref_rejected, beta)
  loss = jnp.mean(losses)
  return loss, {
    "dpo_loss": loss,
    "dpo_accuracy": jnp.mean(reward_model.correct(chosen, rejected, 1.0)),
    "dpo_margin": jnp.mean(chosen - rejected),
    "dpo_chosen_reward": jnp.mean(chosen),
    "dpo_rejected_reward": jnp.mean(rejected),
  }


# The reward model.


def reward_model_loss(scores_first, scores_second, labels, noise: float = 0.0, weights=None):
  """Bradley–Terry loss of a reward model on comparisons (Stiennon et al. 2020, arXiv
  2009.01325, eq. 1; with noise, Christiano et al. 2017):

    loss = -E[y log P' + (1 - y) log(1 - P')],  P' = noise/2 + (1 - noise) σ(s₁ - s₂)

  by `reward_model.bradley_terry_loss`, the control side's loss. With chosen/rejected
  data, first = chosen and labels = 1.

  Args: scores [B] or, for an ensemble head, [B, E]; labels [B] (1, 0 or 0.5);
  weights [B] or [B, E] (bootstrap weights; None: all 1). Returns (loss, metrics):
  each member's weighted mean over pairs, summed over members (each head's gradient is
  its own loss's), and the members' mean loss and accuracy on strict labels.
  """
  labels = jnp.asarray(labels, jnp.float32)
  if scores_first.ndim == 2:
    labels = labels[:, None]
  if weights is None:
    weights = jnp.ones_like(scores_first)
  elif weights.ndim < scores_first.ndim:
    weights = weights[:, None]
  losses = reward_model.bradley_terry_loss(scores_first, scores_second, labels, noise)
  member_losses = reward_model.weighted_mean(losses, weights, axis=0)
  strict = weights * (labels != 0.5)
  correct = reward_model.correct(scores_first, scores_second, labels)
  member_accuracy = reward_model.weighted_mean(correct, strict, axis=0)
  return jnp.sum(member_losses), {
    "rm_loss": jnp.mean(member_losses),
    "rm_accuracy": jnp.mean(member_accuracy),
  }


def score_normalization(scores, target_mean: float = 0.0, target_std: float = 1.0):
  """(gain, bias) such that gain · scores + bias has mean `target_mean` and std
  `target_std` over `scores` [S] (or [S, E]: per member), a sample of the reward
  model's scores of completions from the SFT policy (Ziegler et al. 2019 normalize to
  mean 0, std 1 before RL): gain = target_std / std, bias = target_mean - gain · mean."""
  mean, std = jnp.mean(scores, axis=0), jnp.std(scores, axis=0)
  gain = target_std / jnp.maximum(std, 1e-8)
  return gain, target_mean - gain * mean


def normalize_scores(scores, gain, bias):
  """gain · scores + bias (or fold them into the head: `heads.fold_normalization`)."""
  return gain * scores + bias
