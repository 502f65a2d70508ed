"""A decoder-only transformer with GPT-2's architecture and parameter layout (Flax linen).

  tokens int [B, T], mask bool/int [B, T] (1: a real token, 0: padding, left or right)
  x = wte[tokens] + wpe[positions]          positions count the real tokens before each one
  for each block h_i:                       (pre-LayerNorm residual blocks, as GPT-2)
    x = x + attn.c_proj(causal_attention(split_heads(attn.c_attn(ln_1(x)))))
    x = x + mlp.c_proj(gelu_tanh(mlp.c_fc(ln_2(x))))
  hidden = ln_f(x)                          [B, T, D]
  logits = hidden @ wte.T                   [B, T, V], float32: the unembedding is tied to wte

What follows GPT-2 / Hugging Face's `GPT2LMHeadModel`: the parameter names (`wte`, `wpe`,
`h_{i}` with `ln_1`, `attn.c_attn` a fused q|k|v Dense D -> 3D split in that order and
then into heads, `attn.c_proj`, `ln_2`, `mlp.c_fc` D -> 4D, `mlp.c_proj`, then `ln_f`),
LayerNorm epsilon 1e-5, GELU's tanh approximation ("gelu_new"), the initialization
(normal 0.02; 0.01 for `wpe`; the residual projections `c_proj` scaled by 1/sqrt(2L)),
and positions derived from the attention mask as HF does when `position_ids` come from
it (a left-padded row's first real token is at position 0). Dense kernels are [in, out],
as HF's Conv1D weights, so `weights.py` copies them without a transpose. Logits at
padding positions are unspecified (finite).

The KV cache (`KVCache`) holds every layer's keys and values [B, H, T_max, Dh], which of
its slots hold real tokens, and the next slot to write. `extend` runs the blocks on new
tokens [B, S] at that slot, attending to everything cached before them: `S = T` fills it
with a prompt (prefill), `S = 1` decodes one token. Without a cache, `apply` runs the
same attention on the tokens alone. Everything here is pure; jit it at the call site.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import linen

LAYER_NORM_EPSILON = 1e-5  # every GPT-2 checkpoint's
INIT_STD = 0.02
POSITION_INIT_STD = 0.01


class GPTConfig(NamedTuple):
  """Sizes of a GPT-2-style model. `dtype` is the computation and cache dtype; the
  parameters are stored in float32 whatever it is, and logits come out in float32."""

  vocab_size: int
  n_positions: int  # the most tokens (real ones) a sequence can hold
  n_embd: int
  n_layer: int
  n_head: int
  dtype: Any = jnp.float32


SIZES = {
  # Tests: compiles in a second or two.
  "tiny": GPTConfig(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4),
  # The CPU default: GPT-2's vocabulary (so its tokenizer fits), 7.3M parameters, 6.4M
  # of them in the embedding.
  "cpu": GPTConfig(vocab_size=50257, n_positions=256, n_embd=128, n_layer=4, n_head=4),
  "gpt2": GPTConfig(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12),
  "gpt2-medium": GPTConfig(vocab_size=50257, n_positions=1024, n_embd=1024, n_layer=24, n_head=16),
}


def gpt_config(name: str, **overrides) -> GPTConfig:
  """One of the named `SIZES`, with any field replaced (e.g. `dtype=jnp.bfloat16`)."""
  if name not in SIZES:
    raise ValueError(f"Unknown model size {name!r}; choose one of {tuple(SIZES)}.")
  return SIZES[name]._replace(**overrides)


class KVCache(NamedTuple):
  keys: tuple[jax.Array, ...]  # one per layer, dtype [B, H, T_max, Dh]
  values: tuple[jax.Array, ...]  # one per layer, dtype [B, H, T_max, Dh]
  mask: jax.Array  # bool [B, T_max]: the slots written with real tokens
  index: jax.Array  # int32 []: the next slot to write


def _dense(features: int, name: str, std: float = INIT_STD, dtype=jnp.float32):
  return linen.Dense(features, dtype=dtype, kernel_init=linen.initializers.normal(std), name=name)


def _layer_norm(name: str, dtype):
  return linen.LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=dtype, name=name)


def _split_heads(x, n_head: int):
  """[B, S, D] -> [B, H, S, D / H]: head h takes features h·Dh .. (h+1)·Dh - 1."""
  batch, length, width = x.shape
  return x.reshape(batch, length, n_head, width // n_head).transpose(0, 2, 1, 3)


class _Attention(linen.Module):
  config: GPTConfig

  @linen.compact
  def __call__(self, x, allowed, layer_cache):
    """x [B, S, D]; allowed bool [B, 1, S, T]: which keys each query sees; layer_cache
    None (keys are these S tokens, T = S) or (keys, values, index) with [B, H, T, Dh]
    arrays that these tokens' keys and values are written into at slot `index`."""
    config = self.config
    width = config.n_embd
    fused = _dense(3 * width, "c_attn", dtype=config.dtype)(x)
    query, key, value = (_split_heads(part, config.n_head) for part in jnp.split(fused, 3, -1))
    if layer_cache is not None:
      cached_keys, cached_values, index = layer_cache
      start = (0, 0, index, 0)
      key = jax.lax.dynamic_update_slice(cached_keys, key.astype(cached_keys.dtype), start)
      value = jax.lax.dynamic_update_slice(cached_values, value.astype(cached_values.dtype), start)
    scores = jnp.einsum("bhsd,bhtd->bhst", query, key).astype(jnp.float32)
    scores = scores / math.sqrt(width // config.n_head)
    # The most negative finite value, not -inf: a padding query that sees no key gets
    # uniform weights instead of NaN.
    scores = jnp.where(allowed, scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1).astype(config.dtype)
    attended = jnp.einsum("bhst,bhtd->bhsd", weights, value)
    batch, _, length, _ = attended.shape
    attended = attended.transpose(0, 2, 1, 3).reshape(batch, length, width)
    residual_std = INIT_STD / math.sqrt(2 * config.n_layer)
    output = _dense(width, "c_proj", residual_std, config.dtype)(attended)
    return output, (key, value)


class _MLP(linen.Module):
  config: GPTConfig

  @linen.compact
  def __call__(self, x):
    config = self.config
    hidden = _dense(4 * config.n_embd, "c_fc", dtype=config.dtype)(x)
    hidden = jax.nn.gelu(hidden, approximate=True)  # "gelu_new": the tanh approximation
    residual_std = INIT_STD / math.sqrt(2 * config.n_layer)
    return _dense(config.n_embd, "c_proj", residual_std, config.dtype)(hidden)


class _Block(linen.Module):
  config: GPTConfig

  @linen.compact
  def __call__(self, x, allowed, layer_cache):
    dtype = self.config.dtype
    attended, layer_cache = _Attention(self.config, name="attn")(
      _layer_norm("ln_1", dtype)(x), allowed, layer_cache
    )
    x = x + attended
    x = x + _MLP(self.config, name="mlp")(_layer_norm("ln_2", dtype)(x))
    return x, layer_cache


class GPT(linen.Module):
  """tokens [B, S], mask [B, S], cache (or None) -> (hidden [B, S, D] after ln_f, cache)."""

  config: GPTConfig

  @linen.compact
  def __call__(self, tokens, mask, cache: KVCache | None = None):
    config = self.config
    mask = mask.astype(bool)
    length = tokens.shape[1]
    if cache is None:
      real_before = jnp.zeros((tokens.shape[0],), jnp.int32)
      key_mask = mask
      query_slots = jnp.arange(length)
      key_slots = jnp.arange(length)
    else:
      real_before = jnp.sum(cache.mask, axis=-1, dtype=jnp.int32)
      key_mask = jax.lax.dynamic_update_slice(cache.mask, mask, (0, cache.index))
      query_slots = cache.index + jnp.arange(length)
      key_slots = jnp.arange(cache.mask.shape[1])
    positions = real_before[:, None] + jnp.cumsum(mask, axis=-1, dtype=jnp.int32) - 1
    positions = jnp.clip(positions, 0, config.n_positions - 1)  # padding before any real token

    embed = lambda size, std, name: linen.Embed(
      size,
      config.n_embd,
      dtype=config.dtype,
      embedding_init=linen.initializers.normal(std),
      name=name,
    )
    x = embed(config.vocab_size, INIT_STD, "wte")(tokens)
    x = x + embed(config.n_positions, POSITION_INIT_STD, "wpe")(positions)

    causal = key_slots[None, :] <= query_slots[:, None]  # [S, T]
    allowed = (key_mask[:, None, :] & causal[None])[:, None]  # [B, 1, S, T]
    keys, values = [], []
    for layer in range(config.n_layer):
      layer_cache = None
      if cache is not None:
        layer_cache = (cache.keys[layer], cache.values[layer], cache.index)
      x, (key, value) = _Block(config, name=f"h_{layer}")(x, allowed, layer_cache)
      keys.append(key)
      values.append(value)
    hidden = _layer_norm("ln_f", config.dtype)(x)
    if cache is not None:
      cache = KVCache(tuple(keys), tuple(values), key_mask, cache.index + length)
    return hidden, cache


def unembed(params, hidden):
  """Logits float32 [..., V] of final hidden states [..., D]: hidden @ wte.T (tied)."""
  embedding = params["wte"]["embedding"]
  return jnp.einsum("...d,vd->...v", hidden, embedding.astype(hidden.dtype)).astype(jnp.float32)


class Model(NamedTuple):
  """The model's pure functions; `params` is the tree under linen's "params" collection."""

  config: GPTConfig
  init: Callable  # key -> params
  # (params, tokens [B, T], mask [B, T], return_hidden=False)
  #   -> logits float32 [B, T, V], or (logits, hidden [B, T, D]) with return_hidden
  apply: Callable
  init_cache: Callable  # (batch_size, max_length) -> an empty KVCache
  # (params, cache, tokens [B, S], mask [B, S]) -> (hidden [B, S, D], cache)
  extend: Callable
  unembed: Callable  # (params, hidden [..., D]) -> logits float32 [..., V]


def first_layers(config: GPTConfig, params, layers: int):
  """(config, params) of the model made of the first `layers` blocks of `params` (then
  its ln_f): a smaller trunk that starts from a trained one (0: all blocks, unchanged)."""
  if not 0 <= layers <= config.n_layer:
    raise ValueError(f"layers={layers}: the model has {config.n_layer} blocks (0: all of them).")
  if layers in (0, config.n_layer):
    return config, params
  dropped = {f"h_{layer}" for layer in range(layers, config.n_layer)}
  kept = {name: value for name, value in params.items() if name not in dropped}
  return config._replace(n_layer=layers), kept


def make_model(config: GPTConfig) -> Model:
  """Builds the model's pure functions for `config` (read at trace time)."""
  network = GPT(config)
  head_size = config.n_embd // config.n_head
  if head_size * config.n_head != config.n_embd:
    raise ValueError(f"n_embd={config.n_embd} is not a multiple of n_head={config.n_head}.")

  def init(key):
    tokens = jnp.zeros((1, 1), jnp.int32)
    return network.init(key, tokens, jnp.ones_like(tokens))["params"]

  def apply(params, tokens, mask, return_hidden: bool = False):
    hidden, _ = network.apply({"params": params}, tokens, mask)
    logits = unembed(params, hidden)
    return (logits, hidden) if return_hidden else logits

  def init_cache(batch_size: int, max_length: int) -> KVCache:
    shape = (batch_size, config.n_head, max_length, head_size)
    zeros = tuple(jnp.zeros(shape, config.dtype) for _ in range(config.n_layer))
    return KVCache(
      keys=zeros,
      values=zeros,
      mask=jnp.zeros((batch_size, max_length), bool),
      index=jnp.zeros((), jnp.int32),
    )

  def extend(params, cache: KVCache, tokens, mask):
    """Writes `tokens` [B, S] into the cache's slots index .. index + S - 1 and returns
    their final hidden states; the caller keeps index + S <= the cache's T_max."""
    return network.apply({"params": params}, tokens, mask, cache)

  return Model(
    config=config,
    init=init,
    apply=apply,
    init_cache=init_cache,
    extend=extend,
    unembed=unembed,
  )
