"""Run by tests/test_lm_sharding.py in a process that sees 8 CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8); skipped anywhere else.

The tiny GPT (V 97, T 32, D 32, 4 heads, 2 layers) trained by `lm.sharding`'s trainer
on 8 devices against a plain jit of the same loss and Adam on one device."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from rlhf_jax.lm import model as model_lib
from rlhf_jax.lm import sharding as lm_sharding
from rlhf_jax.lm.sharding import EVERY_DEVICE, MODEL

pytestmark = pytest.mark.skipif(jax.device_count() != 8, reason="needs 8 devices")

# float32 on the CPU; sharded matmuls and reductions add in another order than one device.
# Measured max abs differences: loss 1e-6 (of 4.6), gradients 1e-7 (of ~0.05), params
# after 3 Adam steps (lr 1e-2) 3.5e-6 where Adam divides small gradients by their own
# small scale. Init is bit-identical (threefry is partitionable).
RTOL, ATOL = 1e-5, 1e-6
ADAM_ATOL = 2e-5
STEPS = 3
LEARNING_RATE = 1e-2
CASES = {
  "fsdp on data 2 x model 4": ("fsdp", (("data", 2), ("model", 4))),
  "fsdp on data 8": ("fsdp", (("data", 8),)),
  "tensor_parallel on data 2 x model 4": ("tensor_parallel", (("data", 2), ("model", 4))),
}

MODEL_CONFIG = model_lib.gpt_config("tiny")
MODEL_ = model_lib.make_model(MODEL_CONFIG)
OPTIMIZER = optax.adam(LEARNING_RATE)
LOSS = functools.partial(lm_sharding.next_token_loss, MODEL_)


def batches():
  """STEPS batches of random tokens [8, 16], the last rows right-padded."""
  key_tokens = jax.random.PRNGKey(1)
  tokens = jax.random.randint(key_tokens, (STEPS, 8, 16), 0, MODEL_CONFIG.vocab_size)
  lengths = jnp.array([16, 16, 16, 16, 12, 9, 5, 2])
  mask = jnp.broadcast_to(jnp.arange(16) < lengths[:, None], tokens.shape)
  pairs = zip(np.asarray(tokens), np.asarray(mask), strict=True)
  return [{"tokens": t, "mask": m} for t, m in pairs]


@pytest.fixture(scope="module")
def reference():
  """One device, no shardings: init, then loss and gradients and params after each step."""
  device = jax.devices()[0]
  params = jax.device_put(jax.jit(MODEL_.init)(jax.random.PRNGKey(0)), device)
  opt_state = OPTIMIZER.init(params)
  loss_and_grads = jax.jit(jax.value_and_grad(LOSS))
  records = []
  for batch in batches():
    batch = jax.device_put(batch, device)
    loss, grads = loss_and_grads(params, batch)
    updates, opt_state = OPTIMIZER.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    records.append(jax.device_get((loss, grads, params)))
  return jax.device_get(jax.jit(MODEL_.init)(jax.random.PRNGKey(0))), records


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
  preset, mesh = CASES[request.param]
  config = lm_sharding.sharding_config(preset, mesh)
  trainer = lm_sharding.make_sharded_trainer(config, MODEL_.init, LOSS, OPTIMIZER)
  # Two inits: reading an array to the host pins its buffer, which then cannot be donated.
  init_params = jax.device_get(trainer.init(jax.random.PRNGKey(0)).params)
  state = trainer.init(jax.random.PRNGKey(0))
  shardings_after_init = jax.tree.map(lambda x: x.sharding, state)
  records = []
  for step, batch in enumerate(batches()):
    batch = jax.device_put(batch, trainer.batch_sharding)
    loss, grads = trainer.loss_and_grads(state.params, batch)
    old = state
    state, metrics = trainer.step(state, batch)
    if step == 0:  # the state was donated
      assert all(leaf.is_deleted() for leaf in jax.tree.leaves(old))
    np.testing.assert_allclose(metrics["loss"], loss, rtol=RTOL)
    records.append((jax.device_get((loss, grads, state.params)), grads))
  return preset, trainer, init_params, shardings_after_init, state, records


def assert_trees_close(actual, expected, atol=ATOL):
  leaves = jax.tree_util.tree_leaves_with_path(expected)
  for (path, want), got in zip(leaves, jax.tree.leaves(actual), strict=True):
    name = lm_sharding.path_name(path)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=atol, err_msg=name)


def split_key_bias(params):
  """(params with each c_attn bias's key third cut out, those key biases). A key bias
  adds q · b_k to all of a query's scores, which softmax ignores: its exact gradient is 0,
  and Adam turns the rounding noise left in its place into steps of up to the learning
  rate, different on 8 devices and on 1. It is checked apart, by that bound."""
  width = MODEL_CONFIG.n_embd

  def cut(path, leaf):
    if lm_sharding.path_name(path).endswith("c_attn/bias"):
      return np.concatenate([leaf[:width], leaf[2 * width :]])
    return leaf

  key_biases = [
    leaf[width : 2 * width]
    for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    if lm_sharding.path_name(path).endswith("c_attn/bias")
  ]
  return jax.tree_util.tree_map_with_path(cut, params), key_biases


def test_init_matches_one_device(case, reference):
  _, _, init_params, _, _, _ = case
  assert_trees_close(init_params, reference[0])


def test_loss_and_gradients_match_one_device(case, reference):
  _, trainer, _, _, _, records = case
  assert trainer.mesh.devices.size == 8
  (loss, grads, _), _ = records[0]
  want_loss, want_grads, _ = reference[1][0]
  np.testing.assert_allclose(loss, want_loss, rtol=RTOL)
  assert_trees_close(grads, want_grads)
  _, key_bias_grads = split_key_bias(want_grads)
  assert max(np.abs(g).max() for g in key_bias_grads) < 1e-6  # as split_key_bias says


def test_params_after_adam_steps_match_one_device(case, reference):
  _, trainer, _, _, state, records = case
  for ((loss, _, params), _), (want_loss, _, want_params) in zip(
    records, reference[1], strict=True
  ):
    np.testing.assert_allclose(loss, want_loss, rtol=RTOL)
    params, key_biases = split_key_bias(params)
    want_params, want_key_biases = split_key_bias(want_params)
    assert_trees_close(params, want_params, atol=ADAM_ATOL)
    for got, want in zip(key_biases, want_key_biases, strict=True):
      np.testing.assert_allclose(got, want, atol=STEPS * LEARNING_RATE)
  first_batch = jax.device_put(batches()[0], trainer.batch_sharding)
  loss_after, _ = trainer.loss_and_grads(state.params, first_batch)
  assert loss_after < records[0][0][0] - 0.05  # it learns (the first batch, seen once)


def expected_split(preset, mesh):
  """{parameter: (spec, shard shape)} of the weight matrices and a few vectors of h_0,
  D = 32: the c_fc kernel [D, 4D] on model 4 has shards [D, D] under tensor_parallel."""
  if preset == "tensor_parallel":
    return {
      "wte/embedding": (P(None, MODEL), (97, 8)),
      "wpe/embedding": (P(None, MODEL), (32, 8)),
      "h_0/attn/c_attn/kernel": (P(None, MODEL), (32, 24)),
      "h_0/attn/c_attn/bias": (P(MODEL), (24,)),
      "h_0/attn/c_proj/kernel": (P(MODEL, None), (8, 32)),
      "h_0/attn/c_proj/bias": (P(), (32,)),
      "h_0/mlp/c_fc/kernel": (P(None, MODEL), (32, 32)),
      "h_0/mlp/c_fc/bias": (P(MODEL), (32,)),
      "h_0/mlp/c_proj/kernel": (P(MODEL, None), (32, 32)),
      "h_0/ln_1/scale": (P(), (32,)),
    }
  return {  # fsdp: over all 8 devices, whatever the mesh's shape
    "wte/embedding": (P(None, EVERY_DEVICE), (97, 4)),
    "wpe/embedding": (P(EVERY_DEVICE, None), (4, 32)),
    "h_0/attn/c_attn/kernel": (P(None, EVERY_DEVICE), (32, 12)),
    "h_0/attn/c_attn/bias": (P(), (96,)),
    "h_0/attn/c_proj/kernel": (P(EVERY_DEVICE, None), (4, 32)),
    "h_0/mlp/c_fc/kernel": (P(None, EVERY_DEVICE), (32, 16)),
    "h_0/mlp/c_proj/kernel": (P(EVERY_DEVICE, None), (16, 32)),
    "h_0/ln_1/scale": (P(), (32,)),
  }


def named(tree):
  return {lm_sharding.path_name(p): x for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def test_every_weight_matrix_is_split(case):
  preset, trainer, _, shardings_after_init, state, records = case
  _, last_grads = records[-1]
  for tree in (state.params, last_grads, state.opt_state[0].mu, state.opt_state[0].nu):
    leaves = named(tree)
    for name, (spec, shard_shape) in expected_split(preset, trainer.mesh).items():
      leaf = leaves[name]
      assert leaf.sharding.spec == spec, name
      assert leaf.sharding.mesh == trainer.mesh
      assert leaf.addressable_shards[0].data.shape == shard_shape, name
      assert len(leaf.addressable_shards) == 8
    for name, leaf in leaves.items():  # no matrix left whole, on any device
      if leaf.ndim == 2:
        assert leaf.addressable_shards[0].data.size < leaf.size, name
  assert jax.tree.map(lambda x: x.sharding, state) == shardings_after_init


def test_optimizer_state_is_split_as_its_parameters(case):
  _, trainer, _, _, state, _ = case
  adam = state.opt_state[0]
  params = jax.tree.map(lambda x: x.sharding, state.params)
  assert jax.tree.map(lambda x: x.sharding, adam.mu) == params
  assert jax.tree.map(lambda x: x.sharding, adam.nu) == params
  assert adam.count.sharding.is_fully_replicated and int(adam.count) == STEPS
  assert trainer.shardings.params == params


def test_batch_is_split_and_compiled_step_constrains_it(case):
  preset, trainer, _, _, state, _ = case
  batch = jax.device_put(batches()[0], trainer.batch_sharding)
  per_device = 8 // (8 if preset == "fsdp" else trainer.mesh.shape["data"])
  assert batch["tokens"].addressable_shards[0].data.shape == (per_device, 16)
  text = trainer.step.lower(state, batch).as_text()
  constraints = [line for line in text.splitlines() if "sharding_constraint" in line]
  logits = [line for line in constraints if "x97xf32" in line]  # [B, T, V]
  axes = '{"data", "model"}' if preset == "fsdp" else '{"data"}'
  assert logits and all(axes in line for line in logits), constraints


def test_start_places_given_params(case, reference):
  """An SFT model's params (here the reference init, on device 0) start a sharded run."""
  _, trainer, _, _, _, _ = case
  state = trainer.start(jax.device_put(reference[0], jax.devices()[0]))
  assert jax.tree.map(lambda x: x.sharding, state) == trainer.shardings
  assert_trees_close(jax.device_get(state.params), reference[0])


def collective_shapes(text, op):
  """Result shapes of the (untupled) `op`s in a compiled program's text."""
  return re.findall(r"= (\w+\[[\d,]*\])\S* " + op + r"(?:-start)?\(", text)


def test_compute_is_fsdp_or_tensor_parallel(case):
  """fsdp gathers each weight matrix whole and moves no activation (the batch stays
  split: its gradients are summed in one tupled all-reduce); tensor_parallel never
  gathers a weight matrix and moves activations instead."""
  preset, trainer, _, _, state, _ = case
  batch = jax.device_put(batches()[0], trainer.batch_sharding)
  text = trainer.step.lower(state, batch).compile().as_text()
  matrices = {
    f"f32[{','.join(map(str, leaf.shape))}]"
    for leaf in jax.tree.leaves(state.params)
    if leaf.ndim == 2
  }
  gathered = set(collective_shapes(text, "all-gather"))
  reduced = set(collective_shapes(text, "all-reduce"))
  if preset == "fsdp":
    assert gathered == matrices, (gathered, matrices)
    assert reduced <= {"s32[]", "f32[]"}, reduced
  else:
    assert gathered and not gathered & matrices, gathered
    assert "f32[4,16,32]" in reduced  # the row-parallel c_proj's partial sums
