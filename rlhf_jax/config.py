"""The default experiment config and its validation.

Every experiment in `configs/` starts from `default_config()` and overrides what it
needs. `validate(config)` runs before anything is built or compiled and raises a
`ValueError` whose message says which key is wrong and what to change.

Derived quantities (env steps per iteration, number of chunks) are computed by the
functions below from the config; they are never written back into it.
"""

import importlib.util
import math
import os

import ml_collections

REWARD_SOURCES = ("true", "learned")
LEARNERS = ("ppo", "sac")
PPO_MINIBATCHES = ("sequences", "transitions")
PPO_TORSOS = ("minatar", "pgx", "pgx_shared")
TEACHERS = ("oracle", "stochastic", "myopic", "skip", "equal", "mistake", "human")
# Default segment duration in simulated seconds (Christiano et al. 2017 use 1-2 s).
SEGMENT_SECONDS = 1.5


def default_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Independent runs in one program (seeds seed, seed + 1, ...), vmapped: each is the
  # run its seed gives alone; metrics are per seed plus their mean and std.
  config.num_seeds = 1
  # Total environment steps of the run (rounded up to whole chunks).
  config.total_env_steps = 1_000_000
  # Training iterations scanned inside one compiled call; metrics are logged per chunk.
  config.iterations_per_chunk = 10

  # The device mesh (rlhf_jax/sharding.py): ((axis, size), ...); -1 takes the remaining
  # devices. Envs and rollouts are split over "data"; parameters are replicated.
  config.mesh = (("data", -1),)

  config.env = ml_collections.ConfigDict()
  config.env.name = "inverted_pendulum"
  config.env.backend = "spring"
  config.env.episode_length = 1000
  config.env.action_repeat = 1
  # False: episodes do not end when the body falls (hopper, walker2d, ant, humanoid); it
  # loses the healthy reward instead, so every episode runs to episode_length. Christiano
  # et al. 2017 made this change for learning from preferences (a termination teaches the
  # task through the episode length, and makes the learned reward's arbitrary offset a
  # bonus or a penalty for living); `seals` does the same for `imitation`. Evaluation
  # (rlhf_jax/evaluation.py) always scores the standard task, terminations included.
  config.env.terminate_when_unhealthy = True

  # Which learner optimizes the reward (rlhf_jax/learners.py): "ppo" or "sac".
  config.learner = "ppo"

  # Names follow brax.training.agents.ppo.train so that configs translate one to one.
  config.ppo = ml_collections.ConfigDict()
  config.ppo.num_envs = 128
  config.ppo.unroll_length = 20
  config.ppo.batch_size = 128
  config.ppo.num_minibatches = 8
  config.ppo.num_updates_per_batch = 4
  config.ppo.learning_rate = 3e-4
  config.ppo.entropy_cost = 1e-2
  config.ppo.discounting = 0.97
  config.ppo.gae_lambda = 0.95
  config.ppo.clipping_epsilon = 0.3
  config.ppo.reward_scaling = 1.0
  config.ppo.value_loss_coefficient = 0.5
  config.ppo.normalize_observations = True
  config.ppo.normalize_advantage = True
  config.ppo.max_grad_norm = 0.0  # 0 disables gradient clipping
  # What each minibatch holds (rlhf_jax/ppo.py, make_update_fn): "sequences", whole unrolls
  # of batch_size envs with GAE in the loss (Brax); or "transitions", batch_size *
  # unroll_length single steps shuffled across envs and time, GAE computed once before
  # the epochs (PureJaxRL, pgx's MinAtar PPO).
  config.ppo.minibatches = "sequences"
  # minibatches = "transitions" only: the value may move at most this far from its value
  # before the update, or its loss is as if it had not (PureJaxRL's 0.2); 0: off.
  config.ppo.value_clipping = 0.0
  # The most steps whose values one pass of the value net computes where GAE runs over a
  # whole iteration (minibatches = "transitions"): a larger [T, B] batch runs in passes of
  # whole time steps, one after another (pgx's tower over 4,096 envs x 128 steps at once
  # peaked at 13.9 GB on the CPU).
  config.ppo.steps_per_pass = 65_536
  # Frames (MinAtar) only, rlhf_jax/categorical.py: "minatar", MinAtar's baseline torso
  # (conv 16 3x3, ReLU layers); or "pgx", pgx's PPO network (conv 32 2x2, 2x2 average
  # pooling, dense 64, tanh layers), one tower each for policy and value; or
  # "pgx_shared", pgx's network as pgx has it, one torso under both heads (half the
  # convolutions, most of an update's work).
  config.ppo.torso = "minatar"
  config.ppo.policy_hidden_sizes = (32, 32, 32, 32)
  config.ppo.value_hidden_sizes = (256, 256, 256, 256, 256)

  # learner = "sac": names follow brax.training.agents.sac.train (defaults: Brax's, but
  # the discount, learning rate and replay sizes). One iteration: `unroll_length` steps of
  # `num_envs` envs into the replay buffer, then grad_updates_per_step gradient steps per
  # step of each env, once the buffer holds min_replay_size transitions.
  config.sac = ml_collections.ConfigDict()
  config.sac.num_envs = 128
  config.sac.unroll_length = 1
  config.sac.grad_updates_per_step = 1
  config.sac.batch_size = 256
  config.sac.learning_rate = 3e-4
  config.sac.alpha_learning_rate = 3e-4  # Brax's, for log α
  config.sac.discount = 0.99
  config.sac.reward_scaling = 1.0
  config.sac.tau = 0.005  # Polyak step of the target critics
  config.sac.target_entropy = -0.5  # per action dimension, as Brax
  config.sac.min_replay_size = 8192
  config.sac.max_replay_size = 1_000_000  # the buffer's capacity, in transitions
  config.sac.hidden_sizes = (256, 256)
  config.sac.normalize_observations = True
  # Learning from labels: after every reward-model update, rewrite every stored
  # transition's reward with the new model (PEBBLE, Lee et al. 2021); False keeps the
  # reward each transition was stored with.
  config.sac.relabel = True
  # PEBBLE's unsupervised pre-training: for this many env steps from the start the critics
  # learn an intrinsic reward, each sampled state's distance to its entropy_k-th nearest
  # neighbour among entropy_reference states drawn from the buffer (a particle estimate of
  # state entropy); then they restart on the task's reward. 0: off.
  config.sac.unsupervised_env_steps = 0
  config.sac.entropy_k = 5
  config.sac.entropy_reference = 4096

  # Where the reward that PPO optimizes comes from; the true reward is always recorded.
  config.reward = ml_collections.ConfigDict()
  config.reward.source = "true"  # "true" or "learned" (from preferences)
  # The rest of this block, `segments`, `queries` and the teacher matter only when
  # source == "learned". Defaults follow Christiano et al. 2017.
  config.reward.ensemble_size = 3
  config.reward.hidden_sizes = (64, 64)
  config.reward.inputs = "obs_action"  # or "obs", "obs_next_obs"
  config.reward.learning_rate = 3e-4
  config.reward.label_noise = 0.1  # chance the teacher answers uniformly at random
  config.reward.l2_init = 1e-4  # then adapted: validation loss 1.1-1.5x training loss
  config.reward.batch_size = 64  # labelled pairs per member per Adam step
  config.reward.validation_batch_size = 256
  config.reward.train_steps = 4  # Adam steps per reward-model update
  # Env steps between reward-model updates; 0: one update every iteration. Tied to env
  # steps, the model's training per env step stays the same whatever num_envs is (with
  # few envs, an update every iteration is the preference loop's largest fixed cost).
  config.reward.update_every_env_steps = 0
  # How the ensemble's members run: "loop" one after another (fastest on XLA's CPU
  # backend), "vmap" batched (what accelerators want), "auto" loop on CPU, else vmap.
  config.reward.members = "auto"
  # The most steps whose reward one pass of the ensemble computes; a larger batch (a
  # rollout of pgx's 4,096 envs x 128 steps: a conv member's patches alone are 4.8 GB)
  # runs in passes of at most this many, one after another.
  config.reward.steps_per_pass = 65_536
  config.reward.initial_train_steps = 500  # on the initial labels, before PPO starts
  # Decay per iteration of the running mean/std of each member's reward, which scale the
  # learned reward. 0.9 follows the latest rollouts: once a policy converges their rewards
  # vary little, the normalized reward grows (inverted_double_pendulum, 700 labels:
  # reward_per_step 5 -> 60) and a solved task can collapse (9,360 -> 2,790); 0.999 held
  # 9,360 there and in hopper, but did no better for inverted_pendulum from 100 labels
  # (seeds 0-2: 84, 156, 224 against 65, 468, 238). See configs/*_pref.py for each task's.
  config.reward.normalizer_decay = 0.9
  # Subtract each member's mean reward (the paper's choice, for tasks without early
  # termination); False keeps the offset that labels of unequal-length segments teach.
  config.reward.normalize_mean = True
  # Standardize the network's inputs by running statistics of the rollouts' features.
  config.reward.normalize_inputs = False
  # The learner's reward is the members' mean less this many times their spread (both in
  # standard units): a pessimistic reward, so that a policy is not paid for states where
  # the members disagree, which the labels did not pin down. 0: the mean alone.
  config.reward.disagreement_penalty = 0.0

  config.segments = ml_collections.ConfigDict()
  config.segments.length = 0  # steps; 0 means about SEGMENT_SECONDS of simulated time
  config.segments.per_iteration = 256  # new segments kept per iteration (at most)
  config.segments.buffer_size = 2048  # the most recent segments, to draw queries from
  # Keep every segment that ends an episode (a fall) before the others: where falling ends
  # episodes, only labels on such segments teach the learned reward's offset, and few of
  # a running policy's segments contain one.
  config.segments.prefer_episode_ends = False

  config.queries = ml_collections.ConfigDict()
  config.queries.method = "disagreement"  # or "uniform", "entropy"
  config.queries.oversampling = 10  # candidate pairs per query
  config.queries.total_labels = 700  # the label budget of the run
  config.queries.initial_fraction = 0.25  # asked from the random policy before PPO
  config.queries.schedule = "paper"  # rate ~ timescale / (T + timescale); or "constant"
  config.queries.schedule_timescale = 2e6
  config.queries.buffer_size = 3000  # the most recent labels kept for training

  # Checkpoints of the whole train state under <workdir>/checkpoints/ (rlhf_jax/checkpoint.py);
  # rerunning with the same --workdir resumes from the newest.
  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_chunks = 10  # and always after the last chunk or on SIGTERM/SIGINT
  config.checkpoint.keep = 3  # the newest ones kept

  # A simulated teacher from B-Pref (see rlhf_jax/teachers.py); the parameters below
  # combine with the named preset wherever they differ from the oracle's values.
  config.teacher = "oracle"
  config.teacher_params = ml_collections.ConfigDict()
  config.teacher_params.beta = float("inf")
  config.teacher_params.gamma = 1.0
  config.teacher_params.eps_skip = 0.0
  config.teacher_params.eps_equal = 0.0
  config.teacher_params.eps_mistake = 0.0

  # teacher = "human": the queries go to the labeling app's queue (python -m
  # rlhf_jax.label --workdir=<the same workdir>) and its labels come back between chunks.
  config.human = ml_collections.ConfigDict()
  config.human.wait = False  # True: wait for each batch; False: train on what has arrived
  config.human.grace_seconds = 10.0  # a label this fresh may still be undone: not used yet
  config.human.poll_seconds = 1.0  # how often a waiting run looks for new labels
  return config


def load(path: str) -> ml_collections.ConfigDict:
  """Calls `get_config()` of a config file, e.g. `load("configs/hopper.py")`."""
  spec = importlib.util.spec_from_file_location(os.path.basename(path).removesuffix(".py"), path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def load_json(path: str) -> ml_collections.ConfigDict:
  """A config written as JSON (a run's `config.json`), lists turned back into tuples. Keys
  the file lacks (a run from before they existed) take `default_config()`'s values."""
  import json  # noqa: PLC0415

  def merged(default, value):
    if isinstance(value, dict):
      default = default if isinstance(default, dict) else {}
      return {**default, **{key: merged(default.get(key), item) for key, item in value.items()}}
    return tuple(merged(None, item) for item in value) if isinstance(value, list) else value

  with open(path, encoding="utf-8") as file:
    return ml_collections.ConfigDict(merged(default_config().to_dict(), json.load(file)))


def env_steps_per_iteration(config) -> int:
  """Environment steps (physics steps times action repeat) of one training iteration."""
  steps = num_envs(config) * num_unrolls_per_iteration(config) * unroll_length(config)
  return steps * config.env.action_repeat


def num_envs(config) -> int:
  return config.sac.num_envs if config.learner == "sac" else config.ppo.num_envs


def unroll_length(config) -> int:
  return config.sac.unroll_length if config.learner == "sac" else config.ppo.unroll_length


def num_unrolls_per_iteration(config) -> int:
  """Sequential unrolls of `num_envs` envs that fill one iteration's batch (SAC: 1)."""
  if config.learner == "sac":
    return 1
  return config.ppo.batch_size * config.ppo.num_minibatches // config.ppo.num_envs


def env_steps_per_chunk(config) -> int:
  return env_steps_per_iteration(config) * config.iterations_per_chunk


def num_iterations(config) -> int:
  return num_chunks(config) * config.iterations_per_chunk


def steps_per_episode(config) -> int:
  """Agent steps (decisions) in a full episode: env.episode_length / env.action_repeat."""
  return config.env.episode_length // config.env.action_repeat


def segment_length(config, control_dt: float) -> int:
  """`config.segments.length`, or about SEGMENT_SECONDS of simulated time when it is 0;
  never longer than an episode."""
  length = config.segments.length or max(1, round(SEGMENT_SECONDS / control_dt))
  return min(length, steps_per_episode(config))


def num_chunks(config) -> int:
  steps_per_chunk = env_steps_per_chunk(config)
  return max(1, math.ceil(config.total_env_steps / steps_per_chunk))


def _require_positive(config, keys):
  for key in keys:
    value = _get(config, key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      raise ValueError(f"config.{key} must be a positive integer, got {value!r}.")


def _get(config, dotted_key):
  value = config
  for part in dotted_key.split("."):
    value = value[part]
  return value


def validate(config, device_count: int | None = None) -> None:
  """Checks a config before anything is built; raises ValueError saying what to change.
  `device_count`: the size of the mesh's data axis (default: from config.mesh and the
  devices JAX sees)."""
  from rlhf_jax import envs, sharding  # local import: envs imports brax, which is slow to load

  if device_count is None:
    device_count = sharding.data_size(sharding.make_mesh(config))

  _require_positive(
    config,
    [
      "total_env_steps",
      "num_seeds",
      "iterations_per_chunk",
      "env.episode_length",
      "env.action_repeat",
      "ppo.num_envs",
      "ppo.unroll_length",
      "ppo.batch_size",
      "ppo.num_minibatches",
      "ppo.num_updates_per_batch",
      "ppo.steps_per_pass",
      "checkpoint.every_chunks",
      "checkpoint.keep",
    ],
  )
  envs.check_name_and_backend(config.env.name, config.env.backend)
  if not config.env.terminate_when_unhealthy and config.env.name not in envs.FALLING_ENVS:
    raise ValueError(
      f"config.env.terminate_when_unhealthy=False is for envs whose episodes end when the "
      f"body falls ({', '.join(envs.FALLING_ENVS)}); {config.env.name!r} has no such ending."
    )
  if envs.is_minatar(config.env.name):
    if config.learner != "ppo":
      raise ValueError(
        f"config.env.name={config.env.name!r} has discrete actions: config.learner must be "
        f"'ppo' (SAC here is for continuous actions), got {config.learner!r}."
      )
    if config.env.action_repeat != 1:
      raise ValueError(
        f"MinAtar games have no action repeat: config.env.action_repeat must be 1, got "
        f"{config.env.action_repeat}."
      )
  ppo = config.ppo
  for key in ("learning_rate", "discounting", "gae_lambda", "clipping_epsilon"):
    if not ppo[key] > 0:
      raise ValueError(f"config.ppo.{key} must be > 0, got {ppo[key]!r}.")
  for key in ("discounting", "gae_lambda"):
    if ppo[key] > 1:
      raise ValueError(f"config.ppo.{key} must be in (0, 1], got {ppo[key]!r}.")
  for key in ("entropy_cost", "max_grad_norm", "value_loss_coefficient"):
    if ppo[key] < 0:
      raise ValueError(f"config.ppo.{key} must be >= 0, got {ppo[key]!r}.")
  for key in ("policy_hidden_sizes", "value_hidden_sizes"):
    sizes = tuple(ppo[key])
    if not sizes or any(not isinstance(s, int) or s <= 0 for s in sizes):
      raise ValueError(
        f"config.ppo.{key} must be a non-empty list of positive integers, got {sizes!r}."
      )
  if ppo.minibatches not in PPO_MINIBATCHES:
    raise ValueError(
      f"config.ppo.minibatches={ppo.minibatches!r} is unknown; choose one of {PPO_MINIBATCHES}."
    )
  if ppo.torso not in PPO_TORSOS:
    raise ValueError(f"config.ppo.torso={ppo.torso!r} is unknown; choose one of {PPO_TORSOS}.")
  if ppo.value_clipping < 0:
    raise ValueError(f"config.ppo.value_clipping must be >= 0, got {ppo.value_clipping!r}.")
  if ppo.value_clipping > 0 and ppo.minibatches != "transitions":
    raise ValueError(
      "config.ppo.value_clipping needs the values from before the update, which only "
      "config.ppo.minibatches='transitions' keeps; set it, or value_clipping=0."
    )
  samples = ppo.batch_size * ppo.num_minibatches
  if samples % ppo.num_envs:
    raise ValueError(
      f"config.ppo.batch_size * config.ppo.num_minibatches ({ppo.batch_size} * "
      f"{ppo.num_minibatches} = {samples}) must be a multiple of config.ppo.num_envs "
      f"({ppo.num_envs}): each iteration runs whole unrolls of all envs. Change "
      "batch_size, num_minibatches or num_envs."
    )
  if config.learner not in LEARNERS:
    raise ValueError(f"config.learner={config.learner!r} is unknown; choose one of {LEARNERS}.")
  if config.learner == "sac":
    _validate_sac(config)
  envs_key = f"{config.learner}.num_envs"
  if num_envs(config) % device_count:
    raise ValueError(
      f"config.{envs_key} ({num_envs(config)}) must be a multiple of the device count "
      f"({device_count}, the mesh's data axis): each device steps the same number of envs."
    )
  if config.learner == "sac":
    for key in ("batch_size", "entropy_reference"):
      if config.sac[key] % device_count:
        raise ValueError(
          f"config.sac.{key} ({config.sac[key]}) must be a multiple of the device count "
          f"({device_count}, the mesh's data axis): each device draws its share from "
          "its own part of the replay buffer."
        )
  if config.reward.source not in REWARD_SOURCES:
    raise ValueError(
      f"config.reward.source={config.reward.source!r} is unknown; "
      f"choose one of {', '.join(REWARD_SOURCES)}."
    )
  if config.reward.source == "learned":
    _validate_preferences(config)


def _validate_sac(config) -> None:
  keys = ("num_envs", "unroll_length", "grad_updates_per_step", "batch_size", "max_replay_size")
  keys += ("entropy_k", "entropy_reference")
  _require_positive(config, [f"sac.{key}" for key in keys])
  sac = config.sac
  for key in ("learning_rate", "alpha_learning_rate", "tau", "reward_scaling"):
    if not sac[key] > 0:
      raise ValueError(f"config.sac.{key} must be > 0, got {sac[key]!r}.")
  if not 0 < sac.discount <= 1 or sac.tau > 1:
    raise ValueError(
      f"config.sac.discount ({sac.discount}) and config.sac.tau ({sac.tau}) must be in (0, 1]."
    )
  if not 0 <= sac.min_replay_size <= sac.max_replay_size:
    raise ValueError(
      f"config.sac.min_replay_size ({sac.min_replay_size}) must be in [0, "
      f"config.sac.max_replay_size ({sac.max_replay_size})]."
    )
  steps = sac.num_envs * sac.unroll_length
  if steps > sac.max_replay_size:
    raise ValueError(
      f"config.sac.max_replay_size ({sac.max_replay_size}) must hold one iteration's "
      f"{steps} transitions (num_envs x unroll_length)."
    )
  sizes = tuple(sac.hidden_sizes)
  if not sizes or any(not isinstance(s, int) or s <= 0 for s in sizes):
    raise ValueError(f"config.sac.hidden_sizes must be positive integers, got {sizes!r}.")
  steps = sac.unsupervised_env_steps
  if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
    raise ValueError(f"config.sac.unsupervised_env_steps must be an integer >= 0, got {steps!r}.")


def _validate_preferences(config) -> None:
  from rlhf_jax import queries, reward_model  # local: they import jax

  _require_positive(
    config,
    [
      "reward.ensemble_size",
      "reward.batch_size",
      "reward.validation_batch_size",
      "reward.train_steps",
      "reward.steps_per_pass",
      "segments.per_iteration",
      "segments.buffer_size",
      "queries.oversampling",
      "queries.total_labels",
      "queries.buffer_size",
    ],
  )
  for key in ("reward.initial_train_steps", "segments.length", "reward.update_every_env_steps"):
    value = _get(config, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      raise ValueError(f"config.{key} must be an integer >= 0, got {value!r}.")
  sizes = tuple(config.reward.hidden_sizes)
  if any(not isinstance(s, int) or s <= 0 for s in sizes):
    raise ValueError(f"config.reward.hidden_sizes must be positive integers, got {sizes!r}.")
  episode_steps = steps_per_episode(config)
  if config.segments.length > episode_steps:
    raise ValueError(
      f"config.segments.length ({config.segments.length}) must be at most the episode's "
      f"{episode_steps} steps (env.episode_length / env.action_repeat); a segment never "
      "crosses an episode end. Use 0 for about 1.5 s of simulated time."
    )
  if config.segments.per_iteration > config.segments.buffer_size:
    raise ValueError(
      f"config.segments.per_iteration ({config.segments.per_iteration}) must be at most "
      f"config.segments.buffer_size ({config.segments.buffer_size})."
    )
  every, chunk_steps = config.reward.update_every_env_steps, env_steps_per_chunk(config)
  if every > chunk_steps:
    raise ValueError(
      f"config.reward.update_every_env_steps ({every:,}) must be at most a chunk's "
      f"{chunk_steps:,} env steps (iterations_per_chunk x env steps per iteration), so "
      "that every chunk updates the reward model."
    )
  choices = (
    ("reward.inputs", reward_model.INPUTS),
    ("reward.members", reward_model.MEMBERS),
    ("queries.method", queries.METHODS),
    ("queries.schedule", queries.SCHEDULES),
    ("teacher", TEACHERS),
  )
  for key, allowed in choices:
    if _get(config, key) not in allowed:
      raise ValueError(
        f"config.{key}={_get(config, key)!r} is unknown; choose one of {', '.join(allowed)}."
      )
  queries_config = config.queries
  if queries_config.method in ("kcenter_disagreement", "kcenter_entropy"):
    if queries_config.oversampling < 2:
      raise ValueError(
        f"config.queries.method={queries_config.method!r} keeps the best-scored half of "
        f"the candidates: config.queries.oversampling ({queries_config.oversampling}) "
        "must be at least 2."
      )
  if not 0 <= queries_config.initial_fraction <= 1:
    raise ValueError(
      f"config.queries.initial_fraction must be in [0, 1], got {queries_config.initial_fraction}."
    )
  if queries.initial_labels(queries_config.total_labels, queries_config.initial_fraction) < 1:
    raise ValueError(
      f"config.queries.total_labels ({queries_config.total_labels}) times "
      f"initial_fraction ({queries_config.initial_fraction}) must give at least one initial "
      "label: the reward model needs some before PPO starts."
    )
  if not queries_config.schedule_timescale > 0:
    raise ValueError("config.queries.schedule_timescale must be > 0.")
  for key, low, high in (
    ("reward.learning_rate", 0.0, float("inf")),
    ("reward.label_noise", 0.0, 1.0),
    ("reward.normalizer_decay", 0.0, 1.0),
    ("reward.disagreement_penalty", 0.0, float("inf")),
  ):
    value = _get(config, key)
    if not (low <= value < high) or (key == "reward.learning_rate" and value == 0):
      raise ValueError(f"config.{key} must be in [{low}, {high}), got {value!r}.")
  if not config.reward.l2_init > 0:
    raise ValueError(f"config.reward.l2_init must be > 0, got {config.reward.l2_init!r}.")
  params = config.teacher_params
  if not params.beta > 0:
    raise ValueError(f"config.teacher_params.beta must be > 0 (inf: rational), got {params.beta}.")
  if not 0 < params.gamma <= 1:
    raise ValueError(f"config.teacher_params.gamma must be in (0, 1], got {params.gamma}.")
  for key in ("eps_skip", "eps_equal", "eps_mistake"):
    if not 0 <= params[key] <= 1:
      raise ValueError(f"config.teacher_params.{key} must be in [0, 1], got {params[key]}.")
  if config.teacher == "human":
    if config.num_seeds != 1:
      raise ValueError("config.teacher='human' labels one run: set config.num_seeds=1.")
    for key in ("human.grace_seconds", "human.poll_seconds"):
      if not _get(config, key) >= 0:
        raise ValueError(f"config.{key} must be >= 0, got {_get(config, key)!r}.")
