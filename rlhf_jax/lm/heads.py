"""Scalar heads on the transformer's final hidden states: reward models and value heads.

  params = {"transformer": <model params>, "head": {"kernel": [D] or [D, E], "bias": [] or [E]}}
  head(h) = h · kernel + bias                          h: a final hidden state [D] (after ln_f)

  reward model (Stiennon et al. 2020, arXiv 2009.01325; Ouyang et al. 2022, arXiv 2203.02155):
    score(x) = head(h_last(x))                          h_last: the hidden state at the last
                                                        real token of prompt + completion
  value head (Ziegler et al. 2019, arXiv 1909.08593):
    V_n = head(h at the slot whose logits predict completion token n)     [B, N]

Parameters are a pytree {"transformer", "head"}, so a reward model or a value head starts
from an SFT model's parameters: `with_head(key, sft_params, width)`.

An ensemble of E reward models is E heads on one trunk (`ensemble_size=E`: kernel [D, E],
scores [..., E]). The trunk is nearly all of the parameters and all of the compute, so E
heads cost one forward pass and E dot products, where E separate transformers cost E of
each; members fit on their own bootstrap weights (`losses.reward_model_loss(weights=...)`)
still disagree where the data leave them free. What they share is the trunk's features,
so their disagreement understates what E independent models would show. Independent
members need nothing new here: stack E {"transformer", "head"} trees and `jax.vmap` these
functions over the stack.

Prompts are left-padded (their last column is a real token) and completions
right-padded (their real tokens come first), as `sampling.sample` makes them; `join`
puts them side by side, so a row's real tokens are contiguous. Everything is pure.
"""

import math

import jax
import jax.numpy as jnp

from rlhf_jax.lm.model import Model
from rlhf_jax.lm.sampling import last_real_index


def init_head(key, width: int, ensemble_size: int | None = None, std: float | None = None):
  """A linear head D -> 1 (`ensemble_size` None: kernel [D], bias []) or D -> E (kernel
  [D, E], bias [E]): kernel normal with `std` (default 1/sqrt(D + 1), unit-scale
  scores from unit-scale features), bias 0. A value head may start at `std=0`."""
  std = 1 / math.sqrt(width + 1) if std is None else std
  shape = (width,) if ensemble_size is None else (width, ensemble_size)
  return {
    "kernel": std * jax.random.normal(key, shape, jnp.float32),
    "bias": jnp.zeros(shape[1:], jnp.float32),
  }


def apply_head(head, hidden):
  """float32 [...] (or [..., E] for an ensemble head) from hidden states [..., D]."""
  return jnp.tensordot(hidden.astype(jnp.float32), head["kernel"], axes=1) + head["bias"]


def with_head(
  key, transformer_params, width: int, ensemble_size: int | None = None, std: float | None = None
):
  """{"transformer": transformer_params, "head": a fresh head}: e.g. a reward model or a
  policy with a value head initialized from an SFT model's parameters."""
  return {"transformer": transformer_params, "head": init_head(key, width, ensemble_size, std)}


def fold_normalization(head, gain, bias):
  """The head whose output is gain · head(h) + bias (gain, bias: [] or [E]): a reward
  model's score normalization (`losses.score_normalization`) made part of its head."""
  return {"kernel": head["kernel"] * gain, "bias": head["bias"] * gain + bias}


def join(prompt_tokens, prompt_mask, completion_tokens, completion_mask):
  """Prompt [B, Tp] (left-padded) and completion [B, N] (right-padded) side by side:
  (tokens [B, Tp + N], mask bool [B, Tp + N])."""
  tokens = jnp.concatenate([prompt_tokens, completion_tokens], axis=1)
  mask = jnp.concatenate([prompt_mask.astype(bool), completion_mask.astype(bool)], axis=1)
  return tokens, mask


def sequence_scores(model: Model, params, tokens, mask):
  """Scores float32 [B] (or [B, E]) of sequences tokens [B, T] with any padding: the head
  on the final hidden state of each row's last real token."""
  _, hidden = model.apply(params["transformer"], tokens, mask, return_hidden=True)
  last = last_real_index(mask)
  return apply_head(params["head"], hidden[jnp.arange(tokens.shape[0]), last])


def completion_scores(model: Model, params, prompt_tokens, prompt_mask, tokens, mask):
  """Reward-model scores [B] (or [B, E]) of completions tokens [B, N] (right-padded,
  mask [B, N]) after prompts [B, Tp] (left-padded)."""
  return sequence_scores(model, params, *join(prompt_tokens, prompt_mask, tokens, mask))


def completion_forward(
  model: Model, transformer_params, prompt_tokens, prompt_mask, completion_tokens, completion_mask
):
  """One forward pass over prompt + completion. Returns (logits float32 [B, N, V],
  hidden [B, N, D]) where row n is read at the slot before completion token n (the
  prompt's last token for n = 0), so logits[:, n] is the distribution token n was
  drawn from. Logits are computed for these N slots only (under jit, XLA drops the
  model's logits of the prompt)."""
  tokens, mask = join(prompt_tokens, prompt_mask, completion_tokens, completion_mask)
  _, hidden = model.apply(transformer_params, tokens, mask, return_hidden=True)
  prompt_length, completion_length = prompt_tokens.shape[1], completion_tokens.shape[1]
  hidden = hidden[:, prompt_length - 1 : prompt_length - 1 + completion_length]
  return model.unembed(transformer_params, hidden), hidden


def token_values(model: Model, params, prompt_tokens, prompt_mask, tokens, mask):
  """Value estimates float32 [B, N] of completion tokens [B, N] (0 at padding): the
  value head on the hidden states `completion_forward` reads. A policy that shares its
  trunk with the value head gets its logits from the same forward pass instead."""
  _, hidden = completion_forward(
    model, params["transformer"], prompt_tokens, prompt_mask, tokens, mask
  )
  return jnp.where(mask, apply_head(params["head"], hidden), 0.0)
