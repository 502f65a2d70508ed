"""Supervised fine-tuning (SFT): next-token cross-entropy on the completion tokens.

  logits = model.apply(params, tokens, mask)                      float32 [B, T, V]
  nll[b, t] = -log softmax(logits[b, t - 1])[tokens[b, t]]        t = 1 .. T - 1
  loss = Σ target_mask · nll / Σ target_mask                      the mean over the batch's
                                                                  target tokens
`target_mask` (`data.SFTBatch`) marks the completion and its EOS: BOS, the prompt and
padding never enter the loss. The optimizer is optax's Adam (AdamW when
`weight_decay` > 0) after global-norm clipping, its learning rate warmed up linearly
from 0 over `warmup_steps`, then constant or cosine-decayed to
`end_learning_rate_fraction` of the peak at `steps`.

`make_sft(train_config, model)` returns the pure functions; jit `step` at the call site
(donating the state).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import optax

from rlhf_jax.lm.data import SFTBatch
from rlhf_jax.lm.model import Model

SCHEDULES = ("constant", "cosine")


@flax.struct.dataclass
class SFTState:
  params: Any
  optimizer_state: optax.OptState
  step: jax.Array  # int32 []: optimizer steps taken


class SFT(NamedTuple):
  init: Callable  # (key, params=None) -> SFTState; params: start from these (a checkpoint)
  step: Callable  # (state, SFTBatch, key) -> (state, metrics)
  loss: Callable  # (params, SFTBatch) -> (loss float32 [], metrics)
  learning_rate: Callable  # step -> the schedule's learning rate


def next_token_losses(logits, tokens, target_mask):
  """Per-token terms of the loss, each [B, T - 1] for logits [B, T, V], tokens and
  target_mask [B, T]: the negative log-likelihood of token t given the logits at t - 1,
  whether the argmax there was token t, and the weight of t (target_mask, as float)."""
  log_probs = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  targets = tokens[:, 1:]
  nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  correct = (jnp.argmax(log_probs, axis=-1) == targets).astype(jnp.float32)
  return nll, correct, target_mask[:, 1:].astype(jnp.float32)


def sft_loss(model: Model, params, batch: SFTBatch):
  """(loss, metrics): the mean next-token NLL over the batch's target tokens."""
  logits = model.apply(params, batch.tokens, batch.mask)
  nll, correct, weight = next_token_losses(logits, batch.tokens, batch.target_mask)
  count = jnp.maximum(jnp.sum(weight), 1.0)
  loss = jnp.sum(weight * nll) / count
  metrics = {
    "loss": loss,
    "accuracy": jnp.sum(weight * correct) / count,
    "target_tokens": jnp.sum(weight),
    "tokens": jnp.sum(batch.mask.astype(jnp.float32)),
  }
  return loss, metrics


def make_learning_rate(train_config) -> optax.Schedule:
  """`learning_rate` after a linear warmup from 0 over `warmup_steps` (none if 0): then
  constant, or cosine-decayed to `end_learning_rate_fraction` of it at `steps`."""
  peak, warmup = train_config.learning_rate, train_config.warmup_steps
  if train_config.schedule == "constant":
    after = optax.constant_schedule(peak)
  elif train_config.schedule == "cosine":
    decay_steps = max(train_config.steps - warmup, 1)
    after = optax.cosine_decay_schedule(peak, decay_steps, train_config.end_learning_rate_fraction)
  else:
    raise ValueError(f"schedule={train_config.schedule!r} is unknown; choose one of {SCHEDULES}.")
  if warmup == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def make_optimizer(learning_rate, max_grad_norm: float, weight_decay: float = 0.0):
  """Adam (AdamW when `weight_decay` > 0) after clipping the gradient's global norm to
  `max_grad_norm` (0: no clipping); every LM stage's optimizer. `learning_rate` is a
  number or an optax schedule."""
  if weight_decay > 0:
    adam = optax.adamw(learning_rate, weight_decay=weight_decay)
  else:
    adam = optax.adam(learning_rate)
  if max_grad_norm > 0:
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), adam)
  return adam


def make_sft(train_config, model: Model) -> SFT:
  """SFT's pure functions. `train_config` holds learning_rate, warmup_steps, schedule,
  steps, end_learning_rate_fraction, weight_decay, max_grad_norm (0: no clipping); it is
  read here, at build time."""
  learning_rate = make_learning_rate(train_config)
  optimizer = make_optimizer(learning_rate, train_config.max_grad_norm, train_config.weight_decay)
  loss_fn = lambda params, batch: sft_loss(model, params, batch)

  def init(key, params=None) -> SFTState:
    if params is None:
      params = model.init(key)
    return SFTState(
      params=params, optimizer_state=optimizer.init(params), step=jnp.zeros((), jnp.int32)
    )

  def step(state: SFTState, batch: SFTBatch, key):
    """One Adam step on `batch`; the model has no dropout, so `key` is unused."""
    del key
    grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, batch)
    updates, optimizer_state = optimizer.update(grads, state.optimizer_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = metrics | {
      "grad_norm": optax.tree.norm(grads),
      "learning_rate": learning_rate(state.step),
    }
    return SFTState(params, optimizer_state, state.step + 1), metrics

  return SFT(init=init, step=step, loss=loss_fn, learning_rate=learning_rate)
