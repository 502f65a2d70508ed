"""Sampling completions from a `model.Model` with its KV cache, all inside one jit.

  prompts int [B, Tp], prompt_mask [B, Tp]   (left-padded by convention; any padding works)
  prefill: the prompts go through the model once, filling a cache of Tp + N slots
  step n = 0 .. N-1: choose token n from the logits of the last token seen, then feed it
                     (one token per step, a lax.while_loop that stops once every row has
                     emitted `eos_id`)
  -> Completion(tokens int32 [B, N], mask bool [B, N], log_probs float32 [B, N])

Choosing a token (`choose_tokens`), in the order Hugging Face's `generate` applies them:
logits / temperature, then top-k (keep the k largest), then top-p (keep the smallest set
of the most likely tokens whose probability reaches p), then a categorical draw;
temperature 0 is greedy (argmax, the filters cannot change it). Both filters find their
threshold by bisection over the float32 values' bit patterns (32 passes over the
vocabulary) rather than by sorting it, which XLA's CPU backend does slowly; the tests
check them against a NumPy sort and cumsum.

`log_probs` are the sampled tokens' log-probabilities under the model's own logits,
log_softmax(logits)[token], at temperature 1 and with no top-k/top-p filtering: the
policy's log-probabilities that PPO and a KL penalty need, not those of the filtered
distribution the token was drawn from (the two agree only at temperature 1 with no
filter). A row's mask is 1 up to and including its first `eos_id`; after it the tokens
are `eos_id` and their log-probs 0. With `eos_id=None` every token counts.

`sample` is pure: jit it with `model`, `max_new_tokens`, `top_k` and `eos_id` static;
`temperature` and `top_p` may be traced.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rlhf_jax.lm.model import Model


class Completion(NamedTuple):
  tokens: jax.Array  # int32 [B, N]; eos_id after a row's first eos_id
  mask: jax.Array  # bool [B, N]: up to and including the first eos_id
  log_probs: jax.Array  # float32 [B, N]: log_softmax(logits)[token] at temperature 1; 0 masked


def _order_keys(x):
  """uint32 keys of float32 values [...] that sort as the values do (-inf lowest)."""
  bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
  negative = (bits >> 31) == 1
  return jnp.where(negative, ~bits, bits | jnp.uint32(0x80000000))


def _largest_threshold(keys, enough):
  """Per row of keys [..., V], the largest key τ such that `enough(keys >= τ)` ([..., 1]
  bool) holds, by bisection over the 2^32 keys: 32 passes over the vocabulary. `enough`
  must hold for τ = 0 (every token) and only shrink as τ grows."""
  low = jnp.zeros(keys.shape[:-1] + (1,), jnp.uint32)
  high = jnp.max(keys, axis=-1, keepdims=True) + 1  # no token: not enough

  def halve(_, bounds):
    low, high = bounds
    middle = low + (high - low) // 2
    ok = enough(keys >= middle)
    return jnp.where(ok, middle, low), jnp.where(ok, high, middle)

  return jax.lax.fori_loop(0, 32, halve, (low, high))[0]


def top_k_filter(logits, top_k: int):
  """Logits [..., V] with all but the `top_k` largest of each row set to -inf (ties
  with the k-th largest are kept). The k-th largest is found by bisection, not
  `lax.top_k`: XLA's CPU top_k sorts the row, about 10x slower at V = 50257."""
  keys = _order_keys(logits)
  threshold = _largest_threshold(keys, lambda kept: jnp.sum(kept, -1, keepdims=True) >= top_k)
  return jnp.where(keys >= threshold, logits, -jnp.inf)


def top_p_filter(logits, top_p):
  """Logits [..., V] with every token outside the nucleus set to -inf: with the tokens
  sorted by probability, a token stays if the probability of those before it is
  < top_p, so the most likely token always stays and the kept set is the smallest whose
  mass reaches top_p (ties with its least likely token are kept). That set is
  {p_i >= τ} for the largest τ whose set holds mass >= top_p; τ is found by bisection
  instead of a sort and cumsum, which on XLA's CPU costs ~0.25 s a step at V = 50257.
  top_p >= 1 keeps every token."""
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  keys = _order_keys(probs)
  mass = lambda kept: jnp.sum(jnp.where(kept, probs, 0.0), -1, keepdims=True)
  threshold = _largest_threshold(keys, lambda kept: mass(kept) >= top_p)
  return jnp.where((keys < threshold) & (top_p < 1), -jnp.inf, logits)


def choose_tokens(key, logits, temperature, top_k: int | None = None, top_p=1.0):
  """Tokens int32 [B] from logits [B, V]: greedy where temperature == 0, otherwise a
  draw from softmax of the logits / temperature after top-k and top-p filtering. The
  top-p filter is skipped at run time when top_p >= 1 (a scalar, maybe traced)."""
  greedy = jnp.argmax(logits, axis=-1)
  scaled = logits / jnp.where(temperature > 0, temperature, 1.0)
  if top_k is not None:
    scaled = top_k_filter(scaled, top_k)
  if not (isinstance(top_p, int | float) and top_p >= 1):
    scaled = jax.lax.cond(top_p < 1, top_p_filter, lambda kept, _: kept, scaled, top_p)
  drawn = jax.random.categorical(key, scaled, axis=-1)
  return jnp.where(temperature > 0, drawn, greedy).astype(jnp.int32)


def last_real_index(mask):
  """The column of each row's last real token [B] in a mask [B, T] (left-padded: T - 1)."""
  length = mask.shape[1]
  return length - 1 - jnp.argmax(mask[:, ::-1].astype(bool), axis=1)


class _Decoding(NamedTuple):
  step: jax.Array  # int32 []: the next token to choose
  cache: object  # the model's KVCache
  logits: jax.Array  # float32 [B, V]: of the last token fed
  done: jax.Array  # bool [B]: eos_id emitted
  tokens: jax.Array  # int32 [B, N]
  mask: jax.Array  # bool [B, N]
  log_probs: jax.Array  # float32 [B, N]


def sample(
  model: Model,
  params,
  key,
  prompts,
  prompt_mask,
  max_new_tokens: int,
  temperature=1.0,
  top_k: int | None = None,
  top_p=1.0,
  eos_id: int | None = None,
) -> Completion:
  """Samples `max_new_tokens` tokens after each prompt [B, Tp] (see the module doc)."""
  batch_size, prompt_length = prompts.shape
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens={max_new_tokens}; sample at least one token.")
  if prompt_length + max_new_tokens > model.config.n_positions:
    raise ValueError(
      f"Prompts of {prompt_length} tokens plus {max_new_tokens} new ones exceed the "
      f"model's n_positions={model.config.n_positions}."
    )
  pad = 0 if eos_id is None else eos_id
  key_steps = jax.random.split(key, max_new_tokens)

  cache = model.init_cache(batch_size, prompt_length + max_new_tokens)
  hidden, cache = model.extend(params, cache, prompts, prompt_mask)
  last = last_real_index(prompt_mask)
  logits = model.unembed(params, hidden[jnp.arange(batch_size), last])

  def emit(state: _Decoding) -> _Decoding:
    """Chooses token `step` from `state.logits` and records it."""
    token = choose_tokens(key_steps[state.step], state.logits, temperature, top_k, top_p)
    log_prob = jnp.take_along_axis(jax.nn.log_softmax(state.logits), token[:, None], axis=-1)[:, 0]
    live = ~state.done
    token = jnp.where(live, token, pad)
    done = state.done if eos_id is None else state.done | (token == eos_id)
    return state._replace(
      step=state.step + 1,
      done=done,
      tokens=state.tokens.at[:, state.step].set(token),
      mask=state.mask.at[:, state.step].set(live),
      log_probs=state.log_probs.at[:, state.step].set(jnp.where(live, log_prob, 0.0)),
    )

  def feed_and_emit(state: _Decoding) -> _Decoding:
    previous = jax.lax.dynamic_slice_in_dim(state.tokens, state.step - 1, 1, axis=1)
    hidden, cache = model.extend(params, state.cache, previous, jnp.ones_like(previous))
    return emit(state._replace(cache=cache, logits=model.unembed(params, hidden[:, 0])))

  def running(state: _Decoding):
    return (state.step < max_new_tokens) & ~jnp.all(state.done)

  state = _Decoding(
    step=jnp.zeros((), jnp.int32),
    cache=cache,
    logits=logits,
    done=jnp.zeros((batch_size,), bool),
    tokens=jnp.full((batch_size, max_new_tokens), pad, jnp.int32),
    mask=jnp.zeros((batch_size, max_new_tokens), bool),
    log_probs=jnp.zeros((batch_size, max_new_tokens), jnp.float32),
  )
  state = jax.lax.while_loop(running, feed_and_emit, emit(state))
  return Completion(tokens=state.tokens, mask=state.mask, log_probs=state.log_probs)
