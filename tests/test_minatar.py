"""MinAtar games (rlhf_jax/minatar.py) against pgx's own envs, the categorical policy by
hand, and PPO on Breakout end to end."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pgx
import pytest
from flax import linen

from rlhf_jax import categorical, envs, evaluation, learners, loop, ppo, train
from rlhf_jax import config as config_lib
from rlhf_jax.config import default_config
from rlhf_jax.labeling import render
from tests.test_loop import _deterministic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PgxReference:
  """pgx's game stepped directly, one env at a time with plain Python control flow, with
  the wrapper's documented keys: reset splits (key, key_init); each step splits (key,
  key_step, key_init) and a game that ends restarts from init(key_init)."""

  def __init__(self, name, key, episode_length):
    self.game = pgx.make(name)
    self.init, self.step_game = jax.jit(self.game.init), jax.jit(self.game.step)
    self.key, key_init = jax.random.split(key)
    self.state = self.init(key_init)
    self.episode_length, self.steps = episode_length, 0

  def obs(self):
    return np.asarray(self.state.observation, np.float32).reshape(-1)

  def step(self, action: int):
    self.key, key_step, key_init = jax.random.split(self.key, 3)
    self.state = self.step_game(self.state, jnp.int32(action), key_step)
    reward, over = float(self.state.rewards[0]), bool(self.state.terminated)
    self.steps += 1
    cut = self.steps >= self.episode_length
    if over or cut:
      self.state, self.steps = self.init(key_init), 0
    return reward, float(over or cut), float(cut and not over)


@pytest.mark.parametrize("game", ["breakout", "asterix"])
def test_wrapper_matches_pgx_stepped_directly(game):
  name, num_envs, num_steps, episode_length = f"minatar-{game}", 3, 300, 120
  env = envs.make_env(name, episode_length=episode_length)
  keys = jax.random.split(jax.random.PRNGKey(7), num_envs)
  references = [PgxReference(name, key, episode_length) for key in keys]
  state = jax.jit(env.reset)(keys)
  step = jax.jit(env.step)
  actions = np.random.default_rng(0).integers(0, env.action_size, (num_steps, num_envs))
  game_overs = cuts = 0
  for t in range(num_steps):
    np.testing.assert_array_equal(np.asarray(state.obs), [r.obs() for r in references])
    # the policy's one-hot actions for the wrapper, integers for pgx
    state = step(state, jax.nn.one_hot(actions[t], env.action_size))
    expected = np.array([r.step(a) for r, a in zip(references, actions[t], strict=True)])
    np.testing.assert_array_equal(np.asarray(state.reward), expected[:, 0])
    np.testing.assert_array_equal(np.asarray(state.done), expected[:, 1])
    np.testing.assert_array_equal(np.asarray(state.info["truncation"]), expected[:, 2])
    game_overs += int(np.sum(expected[:, 1] - expected[:, 2]))
    cuts += int(np.sum(expected[:, 2]))
  assert game_overs > 0  # some episodes ended in game over and restarted...
  assert np.asarray(state.reward).dtype == np.float32
  if game == "breakout":
    assert cuts == 0  # random breakout dies well within 120 steps
  np.testing.assert_array_equal(np.asarray(state.obs), [r.obs() for r in references])


def test_episode_cutoff_marks_truncation_and_sums_the_episode():
  # Freeway's game lasts 2,500 frames: only the cut at 7 steps ends these episodes.
  env = envs.make_env("minatar-freeway", "anything: MinAtar ignores the backend", episode_length=7)
  state = jax.jit(env.reset)(jax.random.split(jax.random.PRNGKey(0), 4))
  assert state.obs.shape == (4, 10 * 10 * 7) and env.frame_shape == (10, 10, 7)
  assert state.obs.dtype == jnp.uint8  # 0/1 frames in a quarter of float32's memory
  assert env.observation_size == 700 and env.action_size == 3 and envs.is_discrete(env)
  step = jax.jit(env.step)
  up = jnp.ones((4,), jnp.int32)  # integer actions work too; 1 is "up" in Freeway
  rewards = []
  for _ in range(7):
    assert float(state.info["truncation"].sum()) == 0.0
    state = step(state, up)
    rewards.append(np.asarray(state.reward))
  assert np.all(np.asarray(state.done) == 1) and np.all(np.asarray(state.info["truncation"]) == 1)
  np.testing.assert_array_equal(state.info["steps"], 7.0)  # as Brax's: kept until the next step
  np.testing.assert_array_equal(state.info["episode_metrics"]["length"], 7.0)
  np.testing.assert_array_equal(state.info["episode_metrics"]["sum_reward"], np.sum(rewards, 0))
  state = step(state, up)
  assert float(state.done.sum()) == 0.0
  np.testing.assert_array_equal(state.info["steps"], 1.0)
  np.testing.assert_array_equal(state.info["episode_metrics"]["length"], 1.0)


def test_names_backends_and_action_repeat():
  envs.check_name_and_backend("minatar-seaquest", "spring")
  with pytest.raises(ValueError, match="Unknown environment 'minatar-pong'.*minatar-breakout"):
    envs.make_env("minatar-pong")
  with pytest.raises(ValueError, match="no action repeat"):
    envs.make_env("minatar-breakout", action_repeat=2)
  assert not envs.is_discrete(envs.make_env("inverted_pendulum"))
  env = envs.make_env("minatar-space_invaders", sticky_action_prob=0.0)  # pgx's own kwarg
  assert env.game.sticky_action_prob == 0.0 and env.action_size == 4


def test_categorical_log_prob_entropy_and_mode_by_hand():
  logits = np.array([[1.0, -0.5, 2.0], [0.0, 0.0, 0.0], [3.0, 1.0, -2.0]], np.float32)
  actions = np.eye(3, dtype=np.float32)[[2, 1, 0]]
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  dist = categorical.Categorical(3)
  np.testing.assert_allclose(
    dist.log_prob(jnp.asarray(logits), jnp.asarray(actions)),
    np.log([p[0, 2], p[1, 1], p[2, 0]]),
    rtol=1e-6,
  )
  expected_entropy = -(p * np.log(p)).sum(-1)
  assert expected_entropy[1] == pytest.approx(np.log(3))
  np.testing.assert_allclose(dist.entropy(jnp.asarray(logits), None), expected_entropy, rtol=1e-6)
  np.testing.assert_array_equal(dist.mode(jnp.asarray(logits)), np.eye(3)[[2, 0, 0]])
  assert dist.postprocess(actions) is actions


def test_categorical_samples_are_one_hot_with_softmax_frequencies():
  logits = jnp.log(jnp.array([0.2, 0.5, 0.3]))
  samples = categorical.Categorical(3).sample_no_postprocessing(
    jnp.broadcast_to(logits, (20_000, 3)), jax.random.PRNGKey(0)
  )
  assert samples.dtype == jnp.float32
  np.testing.assert_array_equal(samples.sum(-1), 1.0)
  np.testing.assert_allclose(samples.mean(0), [0.2, 0.5, 0.3], atol=0.015)


def test_patch_conv_is_flax_conv_in_parameters_values_and_gradients():
  """PatchConv against flax's own linen.Conv: the same parameters from the same key, and
  the same output and gradients on random frames (3x3 and a non-square 2x3 kernel)."""
  frames = jax.random.bernoulli(jax.random.PRNGKey(0), 0.3, (5, 10, 9, 4)).astype(jnp.float32)
  for kernel_size in ((3, 3), (2, 3)):
    ours = categorical.PatchConv(16, kernel_size)
    flax_conv = linen.Conv(16, kernel_size, padding="VALID")
    params = ours.init(jax.random.PRNGKey(1), frames)
    reference = flax_conv.init(jax.random.PRNGKey(1), frames)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, reference)
    np.testing.assert_array_equal(params["params"]["kernel"], reference["params"]["kernel"])
    params = {"params": {"kernel": params["params"]["kernel"], "bias": jnp.linspace(-1, 1, 16)}}
    np.testing.assert_allclose(
      ours.apply(params, frames), flax_conv.apply(params, frames), rtol=1e-5, atol=1e-5
    )
    loss = lambda module: lambda p: jnp.sum(jnp.sin(module.apply(p, frames)))  # noqa: E731
    grads, reference_grads = jax.grad(loss(ours))(params), jax.grad(loss(flax_conv))(params)
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), grads, reference_grads
    )


def test_conv_networks_are_minatars_torso():
  config = default_config().ppo
  config.policy_hidden_sizes = config.value_hidden_sizes = (128,)
  networks = ppo.make_networks(400, 3, config, frame_shape=(10, 10, 4))
  state = ppo.init_state(jax.random.PRNGKey(0), networks, ppo.make_optimizer(config), 400)
  # conv 3x3x4x16 + 16; dense (8 * 8 * 16) x 128 + 128; output 128 x 3 + 3 (value: x 1 + 1)
  count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))  # noqa: E731
  assert count(state.params.policy) == 592 + 131_200 + 387
  assert count(state.params.value) == 592 + 131_200 + 129
  obs = jnp.ones((5, 2, 400))
  logits = networks.policy_network.apply(state.normalizer, state.params.policy, obs)
  assert logits.shape == (5, 2, 3)
  assert networks.value_network.apply(state.normalizer, state.params.value, obs).shape == (5, 2)


def tiny_minatar_config(seed=0, game="breakout"):
  """PPO on Breakout (or `game`): 8 envs x 16 steps an iteration, 2 chunks of 2 iterations."""
  config = default_config()
  config.seed = seed
  config.env.name = f"minatar-{game}"
  config.env.episode_length = 200
  config.ppo.num_envs = 8
  config.ppo.unroll_length = 16
  config.ppo.batch_size = 4
  config.ppo.num_minibatches = 2
  config.ppo.num_updates_per_batch = 2
  config.ppo.normalize_observations = False
  config.ppo.policy_hidden_sizes = (32,)
  config.ppo.value_hidden_sizes = (32,)
  config.iterations_per_chunk = 2
  config.total_env_steps = 2 * 2 * 8 * 16
  return config


def test_ppo_on_breakout_runs_and_is_deterministic(tmp_path):
  first = train.train(tiny_minatar_config(), str(tmp_path / "a")).records
  second = train.train(tiny_minatar_config(), str(tmp_path / "b")).records
  other_seed = train.train(tiny_minatar_config(seed=1), str(tmp_path / "c")).records
  assert len(first) == 2 and [r["env_steps"] for r in first] == [256, 512]
  assert _deterministic(first) == _deterministic(second)
  assert _deterministic(first) != _deterministic(other_seed)
  for record in first:
    assert record["episodes"] > 0 and np.isfinite(record["ppo_loss"])
    assert 0 < record["entropy"] <= np.log(3) + 1e-6


@pytest.mark.parametrize("torso", ["minatar", "pgx_shared"])
def test_rollout_records_one_hot_actions_and_brax_evaluation_runs(torso):
  config = tiny_minatar_config()
  config.ppo.torso = torso
  trainer = loop.make_trainer(config)
  state = trainer.init(loop.seed_keys(config))
  agent = state.agent
  action, raw_action, log_prob = trainer.learner.act(agent, state.env_state.obs, state.key)
  assert action.shape == (8, 3) and bool(jnp.all(action == raw_action))
  np.testing.assert_array_equal(action.sum(-1), 1.0)
  assert bool(jnp.all(log_prob <= 0))
  config.env.episode_length = 20  # Brax's Evaluator steps whole episodes: keep them short
  score = evaluation.evaluate_agent(config, trainer.learner, agent, jax.random.PRNGKey(0), 4)
  assert np.isfinite(score) and score >= 0


def test_config_file_validates_and_sac_is_refused():
  config = config_lib.load(os.path.join(REPO, "configs", "minatar_breakout.py"))
  config_lib.validate(config, 1)
  config.learner = "sac"
  with pytest.raises(ValueError, match="discrete actions: config.learner must be 'ppo'"):
    config_lib.validate(config, 1)
  with pytest.raises(ValueError, match="needs continuous actions"):
    learners.make_learner(config, envs.make_env("minatar-breakout"))


@pytest.mark.parametrize(
  "game, torso",
  [("breakout", "minatar"), ("asterix", "minatar"), ("breakout", "pgx_shared")],
)  # asterix: a zero-size array; pgx_shared: the value has no parameters of its own
def test_resume_restores_the_games_bitwise(tmp_path, monkeypatch, game, torso):
  """pgx's game states are part of the checkpoint: stopped after chunk 1 of 2 and resumed,
  the run is the straight one. Asterix's state holds an array of shape (0,), which orbax
  refuses to save."""
  from tests.test_checkpoint import assert_same_arrays, interrupt_after  # noqa: PLC0415

  def config():
    config = tiny_minatar_config(game=game)
    config.ppo.torso = torso
    return config

  straight = train.train(config(), str(tmp_path / "straight"))
  workdir = str(tmp_path / "run")
  interrupt_after(monkeypatch, 1)
  with pytest.raises(train.Interrupted, match="after chunk 1 of 2"):
    train.train(config(), workdir)
  monkeypatch.undo()
  resumed = train.train(config(), workdir)
  assert _deterministic(resumed.records) == _deterministic(straight.records)
  assert_same_arrays(resumed.state, straight.state)


def test_minatar_segments_are_the_papers_atari_clips_of_25_steps():
  config = tiny_minatar_config()
  assert config_lib.segment_length(config, envs.control_dt(envs.make_env(config.env.name))) == 25
  config.env.episode_length = 20  # never longer than an episode
  assert config_lib.segment_length(config, 0.06) == 20


def tiny_preference_config(seed=0):
  """PPO from a simulated teacher's labels on Breakout: conv reward members, 2 chunks."""
  config = tiny_minatar_config(seed)
  config.reward.source = "learned"
  config.reward.hidden_sizes = (16,)
  config.reward.initial_train_steps = 20
  config.reward.batch_size = 8
  config.reward.validation_batch_size = 16
  config.segments.per_iteration = 8
  config.segments.buffer_size = 64
  config.queries.total_labels = 16
  config.queries.oversampling = 2
  config.queries.buffer_size = 64
  config.queries.schedule = "constant"
  return config


def test_preference_loop_on_breakout_runs_and_is_deterministic(tmp_path):
  config = tiny_preference_config()
  trainer = loop.make_trainer(config)
  params = trainer.preferences.model.init(jax.random.PRNGKey(0)).params
  assert "Conv_0" in params["params"]  # the env's frames chose conv members
  # the stored clips keep the env's uint8 frames (4,096 envs x 128 steps of float32
  # frames needed 7.4 GB of temporaries per chunk on Breakout; uint8 3.2 GB)
  stored = trainer.abstract_state.preferences.preferences.first
  assert stored.obs.dtype == jnp.uint8 and stored.action.dtype == jnp.float32
  assert trainer.preferences.segment_length == 25
  # what the labeling app is told: it draws the frames (labeling/frames.py), not MuJoCo
  meta = render.clip_meta(config, trainer)
  assert meta["frame_shape"] == [10, 10, 4] and meta["dt"] == 0.06
  first = train.train(config, str(tmp_path / "a")).records
  second = train.train(tiny_preference_config(), str(tmp_path / "b")).records
  other_seed = train.train(tiny_preference_config(seed=1), str(tmp_path / "c")).records
  # env steps count the random policy's rollout (one iteration's) before PPO starts
  assert len(first) == 2 and [r["env_steps"] for r in first] == [384, 640]
  assert _deterministic(first) == _deterministic(second)
  assert _deterministic(first) != _deterministic(other_seed)
  for record in first:
    assert record["labels_used"] > 4 and np.isfinite(record["rm_train_loss"])
    assert np.isfinite(record["ppo_loss"]) and record["episodes"] > 0


def numpy_pgx_torso(frame, conv_kernel, conv_bias, dense_kernel, dense_bias):
  """pgx's torso on one flattened 10x10xC frame, written out: Haiku's SAME padding for a
  2x2 kernel (a zero row and column after), loops for the convolution and the 2x2 average
  pool, then dense ReLU 64."""
  channels = conv_kernel.shape[2]
  padded = np.zeros((11, 11, channels), np.float32)
  padded[:10, :10] = frame.reshape(10, 10, channels)
  conv = np.zeros((10, 10, conv_kernel.shape[-1]))
  for i in range(10):
    for j in range(10):
      patch = padded[i : i + 2, j : j + 2, :]  # [2, 2, C]
      conv[i, j] = np.einsum("hwc,hwcf->f", patch, conv_kernel) + conv_bias
  pooled = np.maximum(conv, 0).reshape(5, 2, 5, 2, -1).mean(axis=(1, 3))
  return np.maximum(pooled.reshape(-1) @ dense_kernel + dense_bias, 0)


def numpy_tanh_head(x, layers):
  """tanh layers, then a linear output layer; `layers`: Flax Dense parameters in order."""
  for layer in layers[:-1]:
    x = np.tanh(x @ layer["kernel"] + layer["bias"])
  return x @ layers[-1]["kernel"] + layers[-1]["bias"]


def test_pgx_tower_matches_a_numpy_forward_pass():
  """categorical.PgxTower against pgx's network written out in NumPy."""
  frame_shape, hidden, actions = (10, 10, 4), (64, 64), 3
  module = categorical.PgxTower(frame_shape, hidden, actions)
  rng = np.random.default_rng(0)
  obs = rng.integers(0, 2, size=(2, 400)).astype(np.float32)
  params = module.init(jax.random.PRNGKey(1), jnp.asarray(obs))
  p = jax.tree.map(np.asarray, params["params"])
  out = np.asarray(module.apply(params, jnp.asarray(obs)))
  for b in range(2):
    conv, dense = p["Conv_0"], p["Dense_0"]
    x = numpy_pgx_torso(obs[b], conv["kernel"], conv["bias"], dense["kernel"], dense["bias"])
    expected = numpy_tanh_head(x, [p["Dense_1"], p["Dense_2"], p["Dense_3"]])
    np.testing.assert_allclose(out[b], expected, rtol=1e-4, atol=1e-5)
  # conv 2x2x4x32 + 32; dense (5 * 5 * 32) x 64 + 64; 64 x 64 + 64 twice; 64 x 3 + 3
  assert sum(x.size for x in jax.tree.leaves(p)) == 544 + 51_264 + 2 * 4_160 + 195


def test_shared_torso_is_pgxs_actor_critic_and_trains_from_both_losses():
  """ppo.torso = "pgx_shared": pgx's network as pgx has it (one torso, two heads),
  against NumPy; its parameters count as pgx's ActorCritic's; the value loss moves the
  torso that the policy acts with; PPO's transition loss is the same as computed from
  the NumPy logits and values."""
  config = default_config()
  config.ppo.torso = "pgx_shared"
  config.ppo.policy_hidden_sizes = config.ppo.value_hidden_sizes = (64, 64)
  config_lib.validate(config, device_count=1)
  networks = ppo.make_networks(400, 3, config.ppo, frame_shape=(10, 10, 4))
  state = ppo.init_state(jax.random.PRNGKey(0), networks, ppo.make_optimizer(config.ppo), 400)
  assert state.params.value == {}
  p = jax.tree.map(np.asarray, state.params.policy["params"])
  # conv 544, dense 51,264; policy head 2 x 4,160 + 195; value head 2 x 4,160 + 65
  assert sum(x.size for x in jax.tree.leaves(p)) == 544 + 51_264 + 8_515 + 8_385
  obs = np.random.default_rng(1).integers(0, 2, size=(4, 400)).astype(np.float32)
  logits, values = ppo.logits_and_values(networks, state.params, state.normalizer, obs)
  for b in range(4):
    conv, dense = p["Conv_0"], p["Dense_0"]
    x = numpy_pgx_torso(obs[b], conv["kernel"], conv["bias"], dense["kernel"], dense["bias"])
    heads = {
      name: numpy_tanh_head(x, [p[f"{name}_0"], p[f"{name}_1"], p[f"{name}_out"]])
      for name in ("policy", "value")
    }
    np.testing.assert_allclose(logits[b], heads["policy"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(values[b], heads["value"][0], rtol=1e-4, atol=1e-5)
  acted = networks.policy_network.apply(state.normalizer, state.params.policy, obs)
  np.testing.assert_array_equal(acted, logits)  # what Brax's inference function runs
  np.testing.assert_array_equal(ppo.value_of(networks, state.params, state.normalizer, obs), values)
  with pytest.raises(ValueError, match="shared torso"):
    networks.value_network.apply(state.normalizer, state.params.value, obs)

  def value_only(policy_params):
    params = state.params._replace(policy=policy_params)
    return jnp.sum(ppo.value_of(networks, params, state.normalizer, obs) ** 2)

  grads = jax.grad(value_only)(state.params.policy)["params"]
  assert np.abs(grads["Conv_0"]["kernel"]).sum() > 0  # the torso learns from the value
  assert np.abs(grads["policy_out"]["kernel"]).sum() == 0

  actions = jax.nn.one_hot(np.array([0, 1, 2, 1]), 3)
  log_prob = jax.nn.log_softmax(logits)[np.arange(4), np.array([0, 1, 2, 1])] - 0.1
  batch = ppo.Transitions(
    obs=obs,
    raw_action=actions,
    log_prob=log_prob,
    advantage=np.array([1.0, -0.5, 0.2, 0.3], np.float32),
    target=np.array([0.5, 0.0, -0.2, 1.0], np.float32),
    value=np.asarray(values),
  )
  config.ppo.normalize_advantage = False
  config.ppo.value_clipping = 0.0
  config.ppo.clipping_epsilon = 0.2
  loss, metrics = ppo.transition_loss(
    state.params, state.normalizer, batch, None, networks, config.ppo
  )
  ratio = np.exp(0.1)  # each action's log-probability is 0.1 above the old one
  advantage = np.asarray(batch.advantage)
  surrogate = -np.mean(np.minimum(ratio * advantage, np.clip(ratio, 0.8, 1.2) * advantage))
  value_error = 0.5 * np.mean((np.asarray(values) - np.asarray(batch.target)) ** 2)
  probs = np.exp(np.asarray(jax.nn.log_softmax(logits)))
  entropy = -np.mean(np.sum(probs * np.log(probs), axis=-1))
  coefficient = config.ppo.value_loss_coefficient
  expected = surrogate + coefficient * value_error - config.ppo.entropy_cost * entropy
  assert float(loss) == pytest.approx(expected, rel=1e-4)
  assert float(metrics["entropy"]) == pytest.approx(entropy, rel=1e-4)


def test_ppo_torso_key_picks_the_network_and_is_validated():
  config = default_config()
  config.ppo.torso = "pgx"
  config.ppo.policy_hidden_sizes = config.ppo.value_hidden_sizes = (64, 64)
  networks = ppo.make_networks(400, 3, config.ppo, frame_shape=(10, 10, 4))
  state = ppo.init_state(jax.random.PRNGKey(0), networks, ppo.make_optimizer(config.ppo), 400)
  assert state.params.policy["params"]["Conv_0"]["kernel"].shape == (2, 2, 4, 32)
  config.ppo.torso = "nature"
  with pytest.raises(ValueError, match="ppo.torso='nature' is unknown"):
    config_lib.validate(config, device_count=1)
