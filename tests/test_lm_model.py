"""The GPT-2-layout model against a NumPy GPT-2 forward, cached sampling against uncached
recomputation, the logit filters against NumPy, and GPT-2 safetensors checkpoints."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from rlhf_jax.lm import model, sampling, weights
from tests import references

CONFIG = model.SIZES["tiny"]  # V 97, P 32, D 32, 2 layers, 4 heads
MODEL = model.make_model(CONFIG)
TOLERANCE = 1e-5  # max absolute difference of logits (of order 1-5 here) and log-probs

STEPS = 6  # new tokens per sample: one compiled sampler serves most tests

_apply = jax.jit(MODEL.apply, static_argnames="return_hidden")
_sample = jax.jit(sampling.sample, static_argnames=("model", "max_new_tokens", "top_k", "eos_id"))


def random_gpt2_tensors(config, seed=0) -> dict[str, np.ndarray]:
  """A random GPT-2 checkpoint in HF's names and Conv1D layout ([in, out] weights),
  scaled so that attention is far from uniform, the logits spread over a few units, and
  the blocks outweigh the token embedding (else greedy decoding repeats its last token)."""
  rng = np.random.default_rng(seed)
  normal = lambda *shape, std=0.2: rng.normal(0.0, std, shape).astype(np.float32)
  width, inner = config.n_embd, 4 * config.n_embd
  tensors = {
    "wte.weight": normal(config.vocab_size, width, std=0.2),
    "wpe.weight": normal(config.n_positions, width, std=0.3),
    "ln_f.weight": 1 + normal(width, std=0.1),
    "ln_f.bias": normal(width, std=0.1),
  }
  for layer in range(config.n_layer):
    p = f"h.{layer}."
    for norm in ("ln_1", "ln_2"):
      tensors[p + norm + ".weight"] = 1 + normal(width, std=0.1)
      tensors[p + norm + ".bias"] = normal(width, std=0.1)
    for name, fan_in, fan_out, gain in (
      ("attn.c_attn", width, 3 * width, 1.0),
      ("attn.c_proj", width, width, 3.0),
      ("mlp.c_fc", width, inner, 1.0),
      ("mlp.c_proj", inner, width, 3.0),
    ):
      tensors[p + name + ".weight"] = normal(fan_in, fan_out, std=gain / np.sqrt(fan_in))
      tensors[p + name + ".bias"] = normal(fan_out, std=0.1)
  return tensors


TENSORS = random_gpt2_tensors(CONFIG)
PARAMS = weights.params_from_gpt2(TENSORS, CONFIG)


def reference_logits(tokens, tensors=TENSORS):
  return references.gpt2_forward(tensors, tokens, CONFIG.n_head)[0]


def left_padded_prompts():
  """Three prompts of 5, 4 and 2 real tokens, left-padded to 5 with arbitrary ids."""
  rng = np.random.default_rng(7)
  prompts = rng.integers(0, CONFIG.vocab_size, (3, 5)).astype(np.int32)
  mask = np.array([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1], [0, 0, 0, 1, 1]], bool)
  return prompts, mask


def test_logits_and_hidden_states_equal_a_numpy_gpt2_forward():
  tokens = np.random.default_rng(1).integers(0, CONFIG.vocab_size, (3, 12))
  logits, hidden = _apply(PARAMS, tokens, np.ones_like(tokens), return_hidden=True)
  assert logits.shape == (3, 12, CONFIG.vocab_size) and hidden.shape == (3, 12, CONFIG.n_embd)
  for row in range(3):
    expected_logits, expected_hidden = references.gpt2_forward(TENSORS, tokens[row], CONFIG.n_head)
    assert np.max(np.abs(logits[row] - expected_logits)) < TOLERANCE
    assert np.max(np.abs(hidden[row] - expected_hidden)) < TOLERANCE
  assert np.std(logits) > 0.5  # not a degenerate, near-constant model


def test_padded_rows_equal_their_real_tokens_alone():
  rng = np.random.default_rng(2)
  tokens = rng.integers(0, CONFIG.vocab_size, (3, 12))  # padding ids are arbitrary tokens
  mask = np.zeros((3, 12), bool)
  mask[0, 4:] = True  # left-padded
  mask[1, :8] = True  # right-padded
  mask[2, :] = True
  logits = _apply(PARAMS, tokens, mask)
  for row in range(3):
    expected = reference_logits(tokens[row][mask[row]])
    assert np.max(np.abs(logits[row][mask[row]] - expected)) < TOLERANCE
  assert np.all(np.isfinite(logits))  # padding positions too
  alone = _apply(PARAMS, tokens[:1, 4:], np.ones((1, 8), bool))
  assert np.max(np.abs(logits[0, 4:] - alone[0])) < TOLERANCE


def test_named_sizes_have_gpt2s_parameter_counts():
  count = lambda config: sum(
    int(np.prod(x.shape))
    for x in jax.tree.leaves(jax.eval_shape(model.make_model(config).init, jax.random.key(0)))
  )
  assert count(model.gpt_config("gpt2")) == 124_439_808  # HF's GPT2LMHeadModel, tied
  assert count(model.gpt_config("gpt2-medium")) == 354_823_168


def real_tokens(prompts, mask, row):
  return prompts[row][mask[row].astype(bool)]


def greedy_by_recomputation(prompts, mask, steps):
  """Greedy decoding that runs each prompt's real tokens and the tokens chosen so far
  through the NumPy forward again for every new token."""
  completions = []
  for row in range(len(prompts)):
    sequence = list(real_tokens(prompts, mask, row))
    for _ in range(steps):
      sequence.append(int(np.argmax(reference_logits(sequence)[-1])))
    completions.append(sequence[-steps:])
  return np.array(completions)


def test_greedy_cached_decoding_equals_uncached_recomputation():
  prompts, mask = left_padded_prompts()
  completion = _sample(MODEL, PARAMS, jax.random.key(0), prompts, mask, STEPS, temperature=0.0)
  expected = greedy_by_recomputation(prompts, mask, STEPS)
  np.testing.assert_array_equal(completion.tokens, expected)
  assert completion.mask.all()
  assert len(np.unique(expected)) > 6  # the decode does not get stuck on one token


def test_sampled_log_probs_equal_the_uncached_log_softmax():
  prompts, mask = left_padded_prompts()
  completion = _sample(MODEL, PARAMS, jax.random.key(3), prompts, mask, STEPS, temperature=1.0)
  for row in range(len(prompts)):
    prompt = real_tokens(prompts, mask, row)
    logits = reference_logits(np.concatenate([prompt, completion.tokens[row]]))
    log_probs = logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))
    # Token n is predicted at position len(prompt) - 1 + n.
    predicting = log_probs[len(prompt) - 1 : -1]
    expected = predicting[np.arange(STEPS), completion.tokens[row]]
    assert np.max(np.abs(completion.log_probs[row] - expected)) < TOLERANCE
  greedy = _sample(MODEL, PARAMS, jax.random.key(3), prompts, mask, STEPS, temperature=0.0)
  assert np.any(completion.tokens != greedy.tokens)  # temperature 1 does sample
  again = _sample(MODEL, PARAMS, jax.random.key(3), prompts, mask, STEPS, temperature=1.0)
  np.testing.assert_array_equal(again.tokens, completion.tokens)


def test_top_k_one_and_a_tiny_top_p_are_greedy():
  prompts, mask = left_padded_prompts()
  key = jax.random.key(4)
  greedy = _sample(MODEL, PARAMS, key, prompts, mask, STEPS, temperature=0.0).tokens
  top_one = _sample(MODEL, PARAMS, key, prompts, mask, STEPS, temperature=1.0, top_k=1).tokens
  nucleus = _sample(MODEL, PARAMS, key, prompts, mask, STEPS, temperature=1.0, top_p=1e-6).tokens
  np.testing.assert_array_equal(top_one, greedy)
  np.testing.assert_array_equal(nucleus, greedy)


def test_right_padded_prompts_decode_like_left_padded_ones():
  prompts, mask = left_padded_prompts()
  right_prompts, right_mask = np.zeros_like(prompts), np.zeros_like(mask)
  for row in range(3):
    real = prompts[row][mask[row]]
    right_prompts[row, : len(real)], right_mask[row, : len(real)] = real, True
  key = jax.random.key(5)
  left = _sample(MODEL, PARAMS, key, prompts, mask, STEPS, temperature=0.0)
  right = _sample(MODEL, PARAMS, key, right_prompts, right_mask, STEPS, temperature=0.0)
  np.testing.assert_array_equal(right.tokens, left.tokens)
  assert np.max(np.abs(right.log_probs - left.log_probs)) < TOLERANCE


HAND_LOGITS = np.array([2.0, 1.0, 0.5, 3.0, -1.0, 0.0], np.float32)


def numpy_nucleus(logits, top_p):
  """Indices of the smallest set of most likely tokens whose probability reaches top_p."""
  order = np.argsort(-logits.astype(np.float64))
  probs = np.exp(logits[order] - logits.max())
  cumulative = np.cumsum(probs / probs.sum())
  count = int(np.searchsorted(cumulative, top_p)) + 1  # first prefix with mass >= top_p
  return set(order[:count].tolist())


@pytest.mark.parametrize("top_p", [0.05, 0.3, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0])
def test_top_p_filter_matches_numpy_sort_and_cumsum(top_p):
  kept = np.flatnonzero(np.isfinite(sampling.top_p_filter(jnp.asarray(HAND_LOGITS), top_p)))
  assert set(kept.tolist()) == numpy_nucleus(HAND_LOGITS, top_p)


def test_filters_match_numpy_on_random_rows():
  rng = np.random.default_rng(9)
  logits = (3 * rng.normal(size=(6, 50))).astype(np.float32)
  logits[0, :5] = -np.inf  # already filtered tokens
  logits[1, 10:13] = logits[1].max()  # a three-way tie for the largest
  logits[2] = np.abs(logits[2])  # no negative values
  for top_k in (1, 2, 7, 30):
    kept = np.isfinite(sampling.top_k_filter(jnp.asarray(logits), top_k))
    kth_largest = np.sort(logits, axis=1)[:, -top_k][:, None]
    np.testing.assert_array_equal(kept, logits >= kth_largest, err_msg=f"top_k={top_k}")
  for top_p in (0.2, 0.5, 0.9, 0.99):
    kept = np.isfinite(sampling.top_p_filter(jnp.asarray(logits), top_p))
    for row in (0, 2, 3, 4, 5):  # row 1's tie would be cut in two by the sort
      expected = numpy_nucleus(logits[row], top_p)
      assert set(np.flatnonzero(kept[row]).tolist()) == expected, (top_p, row)


def test_filters_by_hand():
  # Probabilities sorted: 3.0 -> 0.605, 2.0 -> 0.222, 1.0 -> 0.082, ...: cumulative 0.605,
  # 0.827, 0.909; top_p 0.8 keeps the first two, ids 3 and 0.
  filtered = np.asarray(sampling.top_p_filter(jnp.asarray(HAND_LOGITS), 0.8))
  assert set(np.flatnonzero(np.isfinite(filtered)).tolist()) == {0, 3}
  np.testing.assert_array_equal(filtered[[0, 3]], HAND_LOGITS[[0, 3]])
  top_three = np.asarray(sampling.top_k_filter(jnp.asarray(HAND_LOGITS), 3))
  assert set(np.flatnonzero(np.isfinite(top_three)).tolist()) == {0, 1, 3}


def test_drawn_tokens_follow_the_tempered_filtered_softmax():
  draws, temperature = 40_000, 0.7
  logits = jnp.broadcast_to(jnp.asarray(HAND_LOGITS), (draws, len(HAND_LOGITS)))
  tokens = sampling.choose_tokens(jax.random.key(6), logits, temperature, top_k=3)
  frequency = np.bincount(np.asarray(tokens), minlength=len(HAND_LOGITS)) / draws
  kept = HAND_LOGITS >= np.sort(HAND_LOGITS)[-3]
  expected = np.where(kept, np.exp(HAND_LOGITS / temperature), 0.0)
  expected /= expected.sum()
  assert np.all(frequency[~kept] == 0)
  assert np.max(np.abs(frequency - expected)) < 0.012  # > 4 binomial standard deviations


def scripted_model(script, vocab_size, logit=10.0):
  """A stand-in Model whose n-th call to `extend` (the prefill is call 0) makes every row
  emit script[row, n] greedily: logit 10 on that token, 0 on the others."""
  script = jnp.asarray(script)

  def extend(params, calls, tokens, mask):
    chosen = script[:, jnp.minimum(calls, script.shape[1] - 1)]
    hidden = logit * jax.nn.one_hot(chosen, vocab_size)[:, None]
    return jnp.broadcast_to(hidden, (*tokens.shape, vocab_size)), calls + 1

  return model.Model(
    config=model.GPTConfig(vocab_size, 64, vocab_size, 1, 1),
    init=None,
    apply=None,
    init_cache=lambda batch_size, max_length: jnp.zeros((), jnp.int32),
    extend=extend,
    unembed=lambda params, hidden: hidden,
  )


def test_eos_masks_the_tokens_after_it():
  eos, vocab_size = 11, 12
  script = np.array([[5, 3, eos, 7, 8], [1, 2, 3, 4, 6], [eos, 9, 9, 9, 9]])
  stand_in = scripted_model(script, vocab_size)
  prompts, mask = np.zeros((3, 2), np.int32), np.ones((3, 2), bool)
  completion = _sample(stand_in, None, jax.random.key(0), prompts, mask, 5, 0.0, eos_id=eos)
  np.testing.assert_array_equal(
    completion.tokens, [[5, 3, eos, eos, eos], [1, 2, 3, 4, 6], [eos, eos, eos, eos, eos]]
  )
  expected_mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool)
  np.testing.assert_array_equal(completion.mask, expected_mask)
  chosen_log_prob = 10 - np.log(np.exp(10) + vocab_size - 1)  # log_softmax at the 10
  np.testing.assert_allclose(
    completion.log_probs, np.where(expected_mask, chosen_log_prob, 0.0), rtol=0, atol=1e-6
  )
  without_eos = _sample(stand_in, None, jax.random.key(0), prompts, mask, 5, 0.0)
  np.testing.assert_array_equal(without_eos.tokens, script)
  assert without_eos.mask.all()


def test_sampling_compiles_once_for_any_temperature_and_top_p():
  traces = []

  def traced_sample(params, key, prompts, mask, temperature, top_p):
    traces.append(None)  # runs only while jax traces
    return sampling.sample(MODEL, params, key, prompts, mask, STEPS, temperature, 20, top_p)

  sample = jax.jit(traced_sample)
  prompts, mask = left_padded_prompts()
  key = jax.random.key(8)
  drawn = sample(PARAMS, key, prompts, mask, 0.9, 0.9)
  greedy = sample(PARAMS, key, prompts, mask, 0.0, 0.5)
  assert len(traces) == 1
  assert drawn.tokens.shape == (3, STEPS) and drawn.tokens.dtype == jnp.int32
  expected = _sample(MODEL, PARAMS, key, prompts, mask, STEPS, temperature=0.0)
  np.testing.assert_array_equal(greedy.tokens, expected.tokens)
  with pytest.raises(ValueError, match="n_positions"):
    sampling.sample(MODEL, PARAMS, key, prompts, mask, CONFIG.n_positions, 0.0)


def write_hf_checkpoint(directory, tensors, config):
  """As HF's GPT2LMHeadModel would: prefixed names, mask buffers, a tied lm_head."""
  size = config.n_positions
  stored = {f"transformer.{name}": value for name, value in tensors.items()}
  for layer in range(config.n_layer):
    stored[f"transformer.h.{layer}.attn.bias"] = np.tril(np.ones((size, size), np.float32))[
      None, None
    ]
    stored[f"transformer.h.{layer}.attn.masked_bias"] = np.array(-1e4, np.float32)
  stored["lm_head.weight"] = tensors["wte.weight"].copy()
  save_file(stored, str(directory / "model.safetensors"), {"format": "pt"})
  fields = {
    "model_type": "gpt2",
    "vocab_size": config.vocab_size,
    "n_positions": config.n_positions,
    "n_embd": config.n_embd,
    "n_layer": config.n_layer,
    "n_head": config.n_head,
    "layer_norm_epsilon": 1e-5,
    "activation_function": "gelu_new",
  }
  (directory / "config.json").write_text(json.dumps(fields))


def test_safetensors_checkpoint_round_trip(tmp_path):
  source, copy = tmp_path / "source", tmp_path / "copy"
  source.mkdir()
  write_hf_checkpoint(source, random_gpt2_tensors(CONFIG, seed=11), CONFIG)
  config, params = weights.load_gpt2(str(source))
  assert config == CONFIG
  from_file = {
    name.removeprefix("transformer."): value
    for name, value in load_file(str(source / "model.safetensors")).items()
  }
  tokens = np.random.default_rng(12).integers(0, CONFIG.vocab_size, (1, 10))
  logits = _apply(params, tokens, np.ones_like(tokens))  # MODEL's: config == CONFIG
  expected = references.gpt2_forward(from_file, tokens[0], CONFIG.n_head)[0]
  assert np.max(np.abs(logits[0] - expected)) < TOLERANCE

  weights.save_gpt2(str(copy), config, params)
  saved = load_file(str(copy / "model.safetensors"))
  buffers = (".attn.bias", ".attn.masked_bias", "lm_head.weight")
  parameters = {name: value for name, value in from_file.items() if not name.endswith(buffers)}
  assert set(saved) == set(parameters)
  for name, value in parameters.items():
    np.testing.assert_array_equal(saved[name], value, err_msg=name)
  assert weights.load_gpt2(str(copy))[0] == CONFIG


@pytest.mark.parametrize(
  "edit, message",
  [
    (lambda t: t.pop("h.1.mlp.c_fc.bias"), r"h\.1\.mlp\.c_fc\.bias"),
    (
      lambda t: t.update({"h.0.attn.c_proj.weight": np.zeros((32, 33), np.float32)}),
      r"h\.0\.attn\.c_proj\.weight has shape \(32, 33\).*\(32, 32\)",
    ),
    (lambda t: t.update({"h.0.attn.rotary.weight": np.zeros(3)}), r"h\.0\.attn\.rotary\.weight"),
    (lambda t: t.update({"lm_head.weight": t["wte.weight"] + 1}), "lm_head.weight"),
  ],
  ids=["missing", "shape", "unexpected", "untied"],
)
def test_bad_checkpoints_name_the_tensor(edit, message):
  tensors = dict(TENSORS)
  edit(tensors)
  with pytest.raises(ValueError, match=message):
    weights.params_from_gpt2(tensors, CONFIG)


def test_missing_files_and_unsupported_configs_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    weights.load_gpt2(str(tmp_path))
  write_hf_checkpoint(tmp_path, TENSORS, CONFIG)
  (tmp_path / "model.safetensors").unlink()
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    weights.load_gpt2(str(tmp_path))
  fields = weights.config_to_json(CONFIG)
  with pytest.raises(ValueError, match="layer_norm_epsilon"):
    weights.config_from_json(fields | {"layer_norm_epsilon": 1e-6})
  with pytest.raises(ValueError, match="n_head"):
    weights.config_from_json({key: value for key, value in fields.items() if key != "n_head"})


def test_first_layers_equal_the_full_model_with_the_later_blocks_silenced():
  """A block whose two output projections (attn.c_proj, mlp.c_proj) are zero adds nothing
  to the residual stream: the full model so silenced from block 1 on is the one-block
  model of first_layers, hidden states and logits."""
  config, params = model.first_layers(CONFIG, PARAMS, 1)
  assert config.n_layer == 1 and set(params) == {"wte", "wpe", "h_0", "ln_f"}
  silenced = jax.tree.map(lambda x: x, PARAMS)
  for name in ("attn", "mlp"):
    projection = silenced["h_1"][name]["c_proj"]
    silenced["h_1"][name]["c_proj"] = jax.tree.map(jnp.zeros_like, projection)
  tokens, mask = left_padded_prompts()
  expected, expected_hidden = MODEL.apply(silenced, tokens, mask, return_hidden=True)
  logits, hidden = model.make_model(config).apply(params, tokens, mask, return_hidden=True)
  np.testing.assert_allclose(hidden, expected_hidden, atol=TOLERANCE)
  np.testing.assert_allclose(logits, expected, atol=TOLERANCE)
  assert not np.allclose(logits, MODEL.apply(PARAMS, tokens, mask), atol=1e-2)
  assert model.first_layers(CONFIG, PARAMS, 0) == (CONFIG, PARAMS)
  with pytest.raises(ValueError, match="2 blocks"):
    model.first_layers(CONFIG, PARAMS, 3)
