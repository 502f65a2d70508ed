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

REWARD_SOURCES = ("true",)


def default_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Total environment steps of the run (rounded up to whole chunks).
  config.total_env_steps = 1_000_000
  # Training iterations scanned inside one compiled call; metrics are logged per chunk.
  config.iterations_per_chunk = 10

  config.env = ml_collections.ConfigDict()
  config.env.name = "inverted_pendulum"
  config.env.backend = "spring"
  config.env.episode_length = 1000
  config.env.action_repeat = 1

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
  config.ppo.policy_hidden_sizes = (32, 32, 32, 32)
  config.ppo.value_hidden_sizes = (256, 256, 256, 256, 256)

  # Where the reward that PPO optimizes comes from; the true reward is always recorded.
  config.reward = ml_collections.ConfigDict()
  config.reward.source = "true"
  return config


def load(path: str) -> ml_collections.ConfigDict:
  """Calls `get_config()` of a config file, e.g. `load("configs/hopper.py")`."""
  spec = importlib.util.spec_from_file_location(os.path.basename(path).removesuffix(".py"), path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def env_steps_per_iteration(config) -> int:
  """Environment steps (physics steps times action repeat) of one training iteration."""
  ppo = config.ppo
  return ppo.batch_size * ppo.num_minibatches * ppo.unroll_length * config.env.action_repeat


def num_unrolls_per_iteration(config) -> int:
  """Sequential unrolls of `num_envs` envs that fill one iteration's batch."""
  return config.ppo.batch_size * config.ppo.num_minibatches // config.ppo.num_envs


def num_chunks(config) -> int:
  steps_per_chunk = env_steps_per_iteration(config) * config.iterations_per_chunk
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


def validate(config, device_count: int = 1) -> None:
  """Checks a config before anything is built; raises ValueError saying what to change."""
  from rlhf_jax import envs  # local import: envs imports brax, which is slow to load

  _require_positive(
    config,
    [
      "total_env_steps",
      "iterations_per_chunk",
      "env.episode_length",
      "env.action_repeat",
      "ppo.num_envs",
      "ppo.unroll_length",
      "ppo.batch_size",
      "ppo.num_minibatches",
      "ppo.num_updates_per_batch",
    ],
  )
  envs.check_name_and_backend(config.env.name, config.env.backend)
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
  samples = ppo.batch_size * ppo.num_minibatches
  if samples % ppo.num_envs:
    raise ValueError(
      f"config.ppo.batch_size * config.ppo.num_minibatches ({ppo.batch_size} * "
      f"{ppo.num_minibatches} = {samples}) must be a multiple of config.ppo.num_envs "
      f"({ppo.num_envs}): each iteration runs whole unrolls of all envs. Change "
      "batch_size, num_minibatches or num_envs."
    )
  if ppo.num_envs % device_count:
    raise ValueError(
      f"config.ppo.num_envs ({ppo.num_envs}) must be a multiple of the device count "
      f"({device_count})."
    )
  if config.reward.source not in REWARD_SOURCES:
    raise ValueError(
      f"config.reward.source={config.reward.source!r} is unknown; "
      f"choose one of {', '.join(REWARD_SOURCES)}."
    )
