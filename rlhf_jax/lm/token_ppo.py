"""Token-level PPO on a language model with a KL penalty toward a frozen reference
(Ziegler et al. 2019, arXiv 1909.08593; Ouyang et al. 2022, arXiv 2203.02155).

One step, a single jittable function of (state, prompts, prompt_mask, key):

  key_collect, key_learn = split(key)
  collect   y ~ π_θ(· | x) at temperature τ                     sampling.sample
            log π_θ(y_n), log π_ref(y_n)                        a forward pass each
            V_n                                                 the value model
            s = score_fn(score_params, x, y)                    [B]: a reward model, a
                                                                program, an ensemble
            r_n = -β (log π_θ(y_n) - log π_ref(y_n)) + [n is y's last token] · s
            A, R = GAE(r, V; γ, λ), A whitened over the batch (optional)
  learn     ppo_epochs × num_minibatches Adam steps of the clipped token PPO loss
            (losses.token_ppo_loss), minibatches of whole sequences, lax.scan
  β         the KL controller's update with the batch's KL: mean_b Σ_n kl_bn

The policy is softmax(logits / τ): sampling, the old and new log-probabilities, the
entropy and the KL all use the same τ (τ = 1 is the model's own distribution), so the
PPO ratio compares like with like. The old log-probabilities are recomputed by a forward
pass instead of taken from the sampler, which reports them at τ = 1 only.

The value model is a second transformer with a scalar head, separate from the policy
(Ziegler et al. and InstructGPT both kept them apart), so value regression cannot pull
the policy's features. `init` starts it from the reward model when given one, as
InstructGPT did ("we initialize the value function from the RM"): the RM's head read at
every prefix is already an estimate of the final score, where a fresh head would start
every advantage at the raw return. An ensemble RM's heads are averaged into one. Given a
bare transformer (the SFT model), the value head starts at zero.

The policy and the value model have their own Adam (and gradient clipping); the summed
loss's value coefficient would only rescale the value gradient, which Adam undoes, so the
two learning rates set the balance instead.

The reward function is passed at make time and its parameters live in the state (see
`rm.py`: arrays closed over by a jitted function become constants of the program).
Nothing here shards; place the state and the prompts with shardings at the call site.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from rlhf_jax.lm import heads, losses, sampling
from rlhf_jax.lm.model import Model
from rlhf_jax.lm.rm import copy_tree
from rlhf_jax.lm.sft import make_optimizer

KL_CONTROLLERS = ("adaptive", "fixed")


def default_config() -> ml_collections.ConfigDict:
  """Ziegler et al. 2019's settings where they apply (γ = 1, λ = 0.95, ε = 0.2, 4
  epochs, the adaptive KL controller with horizon 10,000)."""
  config = ml_collections.ConfigDict()
  config.max_new_tokens = 32
  config.temperature = 1.0  # the policy is softmax(logits / temperature)
  config.eos_id = None  # None: every completion is max_new_tokens long
  config.learning_rate = 1e-5  # the policy's Adam
  config.value_learning_rate = 1e-5  # the value model's Adam
  config.max_grad_norm = 1.0  # per model; 0 disables clipping
  config.ppo_epochs = 4
  config.num_minibatches = 4  # must divide the number of prompts of a step
  config.clip_epsilon = 0.2
  config.value_clip = 0.2
  config.entropy_coefficient = 0.0
  config.gamma = 1.0
  config.gae_lambda = 0.95
  config.whiten_advantages = True
  config.kl = ml_collections.ConfigDict()
  config.kl.controller = "adaptive"  # or "fixed": β stays init_beta
  config.kl.init_beta = 0.1
  config.kl.target = 6.0  # nats per sequence (adaptive)
  config.kl.horizon = 10_000.0  # sequences (adaptive)
  return config


@flax.struct.dataclass
class TokenPPOState:
  policy_params: Any  # the transformer's
  value_params: Any  # {"transformer", "head"}: a separate value model
  reference_params: Any  # frozen: the policy's at init
  score_params: Any  # frozen: what score_fn takes (a reward model's params, or None)
  policy_optimizer_state: optax.OptState
  value_optimizer_state: optax.OptState
  kl: losses.KLControllerState
  steps: jax.Array  # int32 []


class Experience(NamedTuple):
  """A batch of sampled completions and what PPO learns from; all [B, N] but the prompts."""

  prompts: jax.Array  # int [B, Tp], left-padded
  prompt_mask: jax.Array  # bool [B, Tp]
  tokens: jax.Array  # int32 [B, N], right-padded
  mask: jax.Array  # bool [B, N]
  log_probs: jax.Array  # float32: log π_θ(y_n) at sampling time, at temperature τ
  values: jax.Array  # float32: V_n at sampling time
  rewards: jax.Array  # float32: the KL-penalized per-token rewards
  advantages: jax.Array  # float32: GAE, whitened if the config says so
  returns: jax.Array  # float32: the value targets A_n + V_n (before whitening)


class TokenPPO(NamedTuple):
  # (policy_params, value_params, score_params=None, reference_params=None) -> state
  init: Callable
  step: Callable  # (state, prompts, prompt_mask, key) -> (state, metrics)
  collect: Callable  # (state, prompts, prompt_mask, key) -> (Experience, metrics)
  learn: Callable  # (state, Experience, key) -> (state, metrics)


def kl_controller(kl_config) -> losses.KLController:
  if kl_config.controller == "adaptive":
    return losses.adaptive_kl(kl_config.init_beta, kl_config.target, kl_config.horizon)
  if kl_config.controller == "fixed":
    return losses.fixed_kl(kl_config.init_beta)
  raise ValueError(f"kl.controller={kl_config.controller!r}; choose one of {KL_CONTROLLERS}.")


def value_model_from(value_params):
  """{"transformer", "head" [D]} from a reward model (an ensemble head [D, E] averaged
  into the head of the members' mean score) or from a bare transformer (zero head)."""
  if "head" not in value_params:
    width = value_params["wte"]["embedding"].shape[1]
    head = {"kernel": jnp.zeros((width,), jnp.float32), "bias": jnp.zeros((), jnp.float32)}
    return {"transformer": copy_tree(value_params), "head": head}
  head = value_params["head"]
  if head["kernel"].ndim == 2:
    head = {"kernel": jnp.mean(head["kernel"], -1), "bias": jnp.mean(head["bias"], -1)}
  return {"transformer": copy_tree(value_params["transformer"]), "head": copy_tree(head)}


def make_token_ppo(model: Model, config: ml_collections.ConfigDict, score_fn: Callable) -> TokenPPO:
  """Builds token PPO's pure functions; `config` as `default_config()`; `score_fn` as
  `rm.py` describes (score_params, prompts, prompt_mask, tokens, mask) -> [B].

  step(state, prompts [B, Tp], prompt_mask [B, Tp], key) -> (state, metrics), the
  module doc's step: `collect` with key_collect, `learn` with key_learn, then β's
  update. Metrics (scalars): from collect, score (mean), score_std, kl (the mean over
  sequences of Σ_n kl_n), beta (the β these rewards used), reward (mean Σ_n r_n),
  completion_length (mean real tokens), completion_tokens (Σ real completion tokens:
  the tokens a step generates), value, return (means over real tokens); from learn,
  the means over every minibatch update of loss, policy_loss, value_loss, approx_kl,
  clip_fraction and entropy; next_beta after the controller.
  """
  policy_optimizer = make_optimizer(config.learning_rate, config.max_grad_norm)
  value_optimizer = make_optimizer(config.value_learning_rate, config.max_grad_norm)
  controller = kl_controller(config.kl)
  temperature = config.temperature
  num_minibatches = config.num_minibatches

  def init(policy_params, value_params, score_params=None, reference_params=None):
    policy_params = copy_tree(policy_params)
    value_params = value_model_from(value_params)
    reference = policy_params if reference_params is None else reference_params
    return TokenPPOState(
      policy_params=policy_params,
      value_params=value_params,
      reference_params=copy_tree(reference),
      score_params=score_params,
      policy_optimizer_state=policy_optimizer.init(policy_params),
      value_optimizer_state=value_optimizer.init(value_params),
      kl=controller.init(),
      steps=jnp.zeros((), jnp.int32),
    )

  def policy_logits(params, prompts, prompt_mask, tokens, mask):
    """The policy's logits / τ [B, N, V] at each completion token's slot."""
    logits, _ = heads.completion_forward(model, params, prompts, prompt_mask, tokens, mask)
    return logits / temperature

  def log_probs_of(params, prompts, prompt_mask, tokens, mask):
    logits = policy_logits(params, prompts, prompt_mask, tokens, mask)
    return jnp.where(mask, losses.gather_log_probs(logits, tokens), 0.0)

  def collect(state: TokenPPOState, prompts, prompt_mask, key):
    prompt_mask = prompt_mask.astype(bool)
    batch_size = prompts.shape[0]
    completion = sampling.sample(
      model,
      state.policy_params,
      key,
      prompts,
      prompt_mask,
      config.max_new_tokens,
      temperature,
      eos_id=config.eos_id,
    )
    tokens, mask = completion.tokens, completion.mask
    sequence = (prompts, prompt_mask, tokens, mask)
    log_probs = log_probs_of(state.policy_params, *sequence)
    ref_log_probs = log_probs_of(state.reference_params, *sequence)
    values = heads.token_values(model, state.value_params, *sequence)
    scores = score_fn(state.score_params, *sequence).astype(jnp.float32)
    if scores.shape != (batch_size,):
      raise ValueError(
        f"score_fn returned shape {scores.shape}; it must give one score per prompt, "
        f"({batch_size},) (aggregate an ensemble with rm.aggregate_ensemble)."
      )
    rewards, kl = losses.kl_penalized_rewards(log_probs, ref_log_probs, mask, scores, state.kl.beta)
    advantages, returns = losses.gae(rewards, values, mask, config.gamma, config.gae_lambda)
    if config.whiten_advantages:
      advantages = losses.whiten(advantages, mask)
    experience = Experience(
      prompts, prompt_mask, tokens, mask, log_probs, values, rewards, advantages, returns
    )
    lengths = jnp.sum(mask, axis=-1, dtype=jnp.float32)
    metrics = {
      "score": jnp.mean(scores),
      "score_std": jnp.std(scores),
      "kl": jnp.mean(jnp.sum(kl, axis=-1)),
      "beta": state.kl.beta,
      "reward": jnp.mean(jnp.sum(rewards, axis=-1)),
      "completion_length": jnp.mean(lengths),
      "completion_tokens": jnp.sum(lengths),
      "value": losses.masked_mean(values, mask),
      "return": losses.masked_mean(returns, mask),
    }
    return jax.lax.stop_gradient(experience), metrics

  def loss_fn(trainable, minibatch: Experience):
    policy_params, value_params = trainable
    sequence = (minibatch.prompts, minibatch.prompt_mask, minibatch.tokens, minibatch.mask)
    logits = policy_logits(policy_params, *sequence)
    log_probs = jnp.where(minibatch.mask, losses.gather_log_probs(logits, minibatch.tokens), 0.0)
    if config.entropy_coefficient == 0:
      logits = jax.lax.stop_gradient(logits)  # a metric only: no backward pass through it
    values = heads.token_values(model, value_params, *sequence)
    return losses.token_ppo_loss(
      log_probs,
      minibatch.log_probs,
      minibatch.advantages,
      values,
      minibatch.values,
      minibatch.returns,
      minibatch.mask,
      clip_epsilon=config.clip_epsilon,
      value_clip=config.value_clip,
      value_coefficient=1.0,
      entropy=losses.token_entropy(logits),
      entropy_coefficient=config.entropy_coefficient,
    )

  def minibatch_step(carry, minibatch: Experience):
    policy_params, value_params, policy_opt, value_opt = carry
    grad_fn = jax.grad(loss_fn, has_aux=True)
    (policy_grads, value_grads), metrics = grad_fn((policy_params, value_params), minibatch)
    updates, policy_opt = policy_optimizer.update(policy_grads, policy_opt, policy_params)
    policy_params = optax.apply_updates(policy_params, updates)
    updates, value_opt = value_optimizer.update(value_grads, value_opt, value_params)
    value_params = optax.apply_updates(value_params, updates)
    return (policy_params, value_params, policy_opt, value_opt), metrics

  def learn(state: TokenPPOState, experience: Experience, key):
    batch_size = experience.tokens.shape[0]
    if batch_size % num_minibatches:
      raise ValueError(
        f"num_minibatches={num_minibatches} does not divide the batch of {batch_size} "
        "prompts; choose a divisor."
      )

    def epoch(carry, key_epoch):
      permutation = jax.random.permutation(key_epoch, batch_size)
      to_minibatches = lambda x: jnp.take(x, permutation, axis=0).reshape(
        (num_minibatches, -1) + x.shape[1:]
      )
      return jax.lax.scan(minibatch_step, carry, jax.tree.map(to_minibatches, experience))

    carry = (
      state.policy_params,
      state.value_params,
      state.policy_optimizer_state,
      state.value_optimizer_state,
    )
    keys = jax.random.split(key, config.ppo_epochs)
    (policy_params, value_params, policy_opt, value_opt), metrics = jax.lax.scan(epoch, carry, keys)
    state = state.replace(
      policy_params=policy_params,
      value_params=value_params,
      policy_optimizer_state=policy_opt,
      value_optimizer_state=value_opt,
      steps=state.steps + 1,
    )
    return state, jax.tree.map(jnp.mean, metrics)

  def step(state: TokenPPOState, prompts, prompt_mask, key):
    key_collect, key_learn = jax.random.split(key)
    experience, collect_metrics = collect(state, prompts, prompt_mask, key_collect)
    state, learn_metrics = learn(state, experience, key_learn)
    kl = controller.update(state.kl, collect_metrics["kl"], prompts.shape[0])
    metrics = {**collect_metrics, **learn_metrics, "next_beta": kl.beta}
    return state.replace(kl=kl), metrics

  return TokenPPO(init=init, step=step, collect=collect, learn=learn)
