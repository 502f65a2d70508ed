"""The LM's sharding rules, mesh and trainer on one device; the 8-device checks run in a
subprocess (tests/eight_devices_lm.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AbstractMesh, AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from rlhf_jax.lm import heads
from rlhf_jax.lm import model as model_lib
from rlhf_jax.lm import sharding as lm_sharding
from tests.test_sharding import run_on_eight_devices

MESH_2X4 = AbstractMesh((2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2)


def abstract_params(size):
  return jax.eval_shape(model_lib.make_model(model_lib.gpt_config(size)).init, jax.random.key(0))


def names(tree):
  return [lm_sharding.path_name(path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)]


@pytest.mark.parametrize("preset", list(lm_sharding.PRESETS))
def test_presets_place_every_gpt2_parameter_and_split_every_matrix(preset):
  """GPT-2's 124M tree, and a reward model's {"transformer", "head"} tree (ensemble and
  scalar heads), on a (data 2, model 4) mesh: every parameter matched, every dimension
  divides, every weight matrix split."""
  params = abstract_params("gpt2")
  key = jax.random.key(0)
  reward_model = jax.eval_shape(lambda: heads.with_head(key, params, 768, ensemble_size=4))
  value_model = jax.eval_shape(lambda: heads.with_head(key, params, 768))
  rules = lm_sharding.PRESETS[preset].rules
  for tree in (params, reward_model, value_model):
    shardings = lm_sharding.param_shardings(MESH_2X4, tree, rules)
    assert names(shardings) == names(tree)
    for name, leaf, sharding in zip(
      names(tree), jax.tree.leaves(tree), jax.tree.leaves(shardings), strict=True
    ):
      if leaf.ndim == 2 and not name.startswith("head/"):
        split = 8 if preset == "fsdp" else 4
        assert np.prod(sharding.shard_shape(leaf.shape)) * split == leaf.size, name
  assert "transformer/h_11/mlp/c_fc/kernel" in names(reward_model)
  assert "head/kernel" in names(value_model)
  tensor_parallel = lm_sharding.param_shardings(
    MESH_2X4, params, lm_sharding.PRESETS["tensor_parallel"].rules
  )
  assert tensor_parallel["h_0"]["mlp"]["c_fc"]["kernel"].shard_shape((768, 3072)) == (768, 768)
  assert tensor_parallel["h_0"]["mlp"]["c_proj"]["kernel"].spec == P("model", None)


def test_bytes_per_device_of_gpt2_with_adam():
  """MEASURED in lm/sharding.py's docstring: GPT-2 (124M) + Adam is 1.49 GB on one
  device; on (data 2, model 4) fsdp holds 188 MB a device, tensor_parallel 374 MB."""
  params = abstract_params("gpt2")
  optimizer = optax.adam(1e-4)
  opt_state = jax.eval_shape(optimizer.init, params)
  one = AbstractMesh((1, 1), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
  whole = jax.tree.map(lambda _: NamedSharding(one, P()), (params, opt_state))
  total = lm_sharding.bytes_per_device((params, opt_state), whole)
  assert total == 3 * 4 * 124_439_808 + 4  # params, mu, nu in float32; Adam's count
  per_device = {}
  for preset, (rules, _, _) in lm_sharding.PRESETS.items():
    params_shardings = lm_sharding.param_shardings(MESH_2X4, params, rules)
    opt_shardings = lm_sharding.optimizer_shardings(optimizer, opt_state, params_shardings)
    assert opt_shardings[0].mu == params_shardings == opt_shardings[0].nu
    assert opt_shardings[0].count.spec == P()
    per_device[preset] = lm_sharding.bytes_per_device(
      (params, opt_state), (params_shardings, opt_shardings)
    )
  # The vectors stay whole: a little over 1/8 and 1/4.
  assert total / 8 < per_device["fsdp"] < 1.01 * total / 8
  assert total / 4 < per_device["tensor_parallel"] < 1.01 * total / 4
  assert (round(total / 1e6), round(per_device["fsdp"] / 1e6)) == (1493, 188)
  assert round(per_device["tensor_parallel"] / 1e6) == 374


def test_a_rule_that_does_not_divide_is_refused_by_name():
  rules = (
    (r"wte/embedding$", ("model", None)),  # the vocabulary, 97, over 4 devices
    *lm_sharding.PRESETS["tensor_parallel"].rules,
  )
  message = r"dimension 0 of 'wte/embedding' \(97, 32\) over model \(4 devices\); 97"
  with pytest.raises(ValueError, match=message):
    lm_sharding.param_shardings(MESH_2X4, abstract_params("tiny"), rules)


def test_an_unmatched_parameter_is_refused_by_name():
  rules = tuple(
    rule for rule in lm_sharding.PRESETS["fsdp"].rules if "ln_" not in rule[0]
  )  # no rule for the layer norms
  with pytest.raises(ValueError, match=r"No sharding rule matches the parameter 'h_0/ln_1/bias'"):
    lm_sharding.param_shardings(MESH_2X4, abstract_params("tiny"), rules)


@pytest.mark.parametrize(
  "rules, message",
  [
    (((r".*", (None, None, "data")),), r"more entries than dimensions"),
    (((r".*", ("expert",)),), r"names axes \{'expert'\} the mesh lacks"),
  ],
)
def test_malformed_rules_are_refused(rules, message):
  with pytest.raises(ValueError, match=message):
    lm_sharding.param_shardings(MESH_2X4, abstract_params("tiny"), rules)


@pytest.mark.parametrize(
  "axes, message",
  [
    ((("data", 2), ("model", 4)), r"asks for 8 devices; there are 1"),
    ((("data", -1), ("model", -1)), r"-1 for at most one axis"),
    ((("data", 1), ("expert", 1)), r"the axes are \('data', 'model'\)"),
    ((("data", 0),), r"sizes are positive"),
  ],
)
def test_bad_lm_mesh_is_refused(axes, message):
  with pytest.raises(ValueError, match=message):
    lm_sharding.make_lm_mesh(axes)


def test_lm_mesh_has_both_axes():
  mesh = lm_sharding.make_lm_mesh((("model", 1), ("data", -1)))
  assert mesh.axis_names == ("data", "model") and mesh.devices.shape == (jax.device_count(), 1)
  assert mesh.axis_types == (AxisType.Auto, AxisType.Auto)
  config = lm_sharding.sharding_config("tensor_parallel")
  assert config.rules == lm_sharding.PRESETS["tensor_parallel"].rules
  assert config.batch_axes == ("data",) and not config.gather_params
  with pytest.raises(ValueError, match=r"Unknown sharding preset 'zero'"):
    lm_sharding.sharding_config("zero")


def test_next_token_loss_by_hand():
  """Uniform logits (zero params): log V per counted token; padded and first tokens out."""
  model = model_lib.make_model(model_lib.gpt_config("tiny"))
  params = jax.tree.map(jnp.zeros_like, model.init(jax.random.key(0)))
  batch = {
    "tokens": jnp.array([[1, 2, 3, 4], [5, 6, 0, 0]]),
    "mask": jnp.array([[1] * 4, [1, 1, 0, 0]]),
  }
  loss = lm_sharding.next_token_loss(model, params, batch)
  np.testing.assert_allclose(loss, np.log(97), rtol=1e-6)
  # Non-uniform logits: the mean over the 4 counted tokens (3 + 1), by hand.
  params = model.init(jax.random.key(1))
  logits = model.apply(params, batch["tokens"], batch["mask"])
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  counted = [(0, 0, 2), (0, 1, 3), (0, 2, 4), (1, 0, 6)]  # (row, slot, next token)
  want = -np.mean([log_probs[row, slot, token] for row, slot, token in counted])
  np.testing.assert_allclose(lm_sharding.next_token_loss(model, params, batch), want, rtol=1e-6)


@pytest.mark.parametrize("preset", list(lm_sharding.PRESETS))
def test_trainer_on_one_device_trains_and_donates(preset):
  model = model_lib.make_model(model_lib.gpt_config("tiny"))
  loss_fn = functools.partial(lm_sharding.next_token_loss, model)
  trainer = lm_sharding.make_sharded_trainer(
    lm_sharding.sharding_config(preset), model.init, loss_fn, optax.adam(1e-2)
  )
  state = trainer.init(jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (4, 16), 0, 97)
  batch = jax.device_put({"tokens": tokens, "mask": jnp.ones_like(tokens)}, trainer.batch_sharding)
  first, _ = trainer.loss_and_grads(state.params, batch)
  for _ in range(5):
    old = state
    state, metrics = trainer.step(state, batch)
  assert all(leaf.is_deleted() for leaf in jax.tree.leaves(old))
  assert metrics["loss"] < first - 0.1 and np.isfinite(metrics["grad_norm"])


def test_placement_places_a_stage_state_by_path_and_the_rest_whole():
  """A state as the pipeline's stages hold them: the policy's and a reward model's params
  under any prefix and Adam's moments by the rules, counts and a label buffer whole."""
  placement = lm_sharding.Placement(MESH_2X4, *lm_sharding.PRESETS["tensor_parallel"])
  params = abstract_params("tiny")
  reward = heads.with_head(jax.random.key(0), params, 32)
  state = {
    "policy_params": params,
    "score_params": reward,
    "adam": jax.eval_shape(optax.adam(1e-3).init, params),
    "steps": jax.ShapeDtypeStruct((), jnp.int32),
    "buffer": jax.ShapeDtypeStruct((100, 6), jnp.int32),
  }
  specs = {
    lm_sharding.path_name(path): sharding.spec
    for path, sharding in jax.tree_util.tree_leaves_with_path(placement.shardings(state))
  }
  kernel = "h_1/mlp/c_proj/kernel"  # row-parallel: [4D, D] split on 4D over model
  for prefix in ("policy_params", "score_params/transformer", "adam/0/mu", "adam/0/nu"):
    assert specs[f"{prefix}/{kernel}"] == P("model", None)
    assert specs[f"{prefix}/wte/embedding"] == P(None, "model")
  assert specs["score_params/head/kernel"] == P()
  assert specs["steps"] == specs["adam/0/count"] == specs["buffer"] == P()


@pytest.mark.slow  # about 5-6 minutes on 2 loaded cores (the whole pipeline: 4 of them)
def test_stages_on_eight_cpu_devices():
  """tests/eight_devices_lm_stages.py in a process that sees 8 CPU devices: SFT, the
  reward-model fit, token PPO and DPO placed by fsdp and tensor_parallel on data 2 x
  model 4, against one device; and the whole tiny pipeline (every stage, online PPO
  included) tensor-parallel on 8 devices against a 1-device mesh."""
  stdout = run_on_eight_devices("tests/eight_devices_lm_stages.py")
  assert "10 passed" in stdout, stdout[-2000:]


@pytest.mark.slow  # about a minute cold on 2 loaded cores (compiles 3 meshes x 2 presets)
def test_on_eight_cpu_devices():
  """tests/eight_devices_lm.py in a process that sees 8 CPU devices: fsdp on (data 2,
  model 4) and (data 8), tensor_parallel on (data 2, model 4), against one device."""
  stdout = run_on_eight_devices("tests/eight_devices_lm.py")
  assert "24 passed" in stdout, stdout[-2000:]
