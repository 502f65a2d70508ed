"""Brax environments by name and backend, and MinAtar games, wrapped for training.

`make_env` returns a batched environment: `reset(key)` takes one key per env
(`key: [num_envs, 2]`) and `step` auto-resets finished episodes. Episodes are cut at
`episode_length` (counted in env steps times `action_repeat`, as Brax counts them), and
`state.info['truncation']` marks a cut that was not a true termination.

`minatar-<game>` names (rlhf_jax/minatar.py) give MinAtar games with the same contract and
discrete actions (`is_discrete(env)`); for them `backend` is ignored (one implementation,
pgx's) and `action_repeat` must be 1.
"""

import warnings

from brax import envs as brax_envs

from rlhf_jax import minatar

# Brax warns on every env it builds that its own pipelines are unmaintained. We choose
# Brax's backends knowingly, by speed (the README's throughput section), so the warning
# only buries our output. This is the one place it is silenced: importing rlhf_jax.envs
# (as everything that builds an env does) silences it for the whole process.
BRAX_WARNING = "Brax System, piplines and environments"
warnings.filterwarnings("ignore", message=BRAX_WARNING)

BACKENDS = ("generalized", "mjx", "positional", "spring")


def _shim_brax_fluid() -> None:
  """Brax 0.14.2's fluid forces (swimmer's viscous medium, generalized backend) call
  `jnp.clip(..., a_min=...)`, a keyword jax 0.10 removed. That one module gets a
  `jax.numpy` whose `clip` takes it; nothing else changes."""
  import inspect  # noqa: PLC0415
  import types  # noqa: PLC0415

  import jax.numpy as jnp  # noqa: PLC0415
  from brax import fluid  # noqa: PLC0415

  if "a_min" in inspect.signature(jnp.clip).parameters:
    return

  class Numpy(types.ModuleType):
    def __getattr__(self, name):
      return getattr(jnp, name)

    @staticmethod
    def clip(x, a_min=None, a_max=None, **kwargs):
      return jnp.clip(x, min=a_min, max=a_max, **kwargs)

  fluid.jp = Numpy("jax.numpy, with clip(a_min, a_max) for brax.fluid")


_shim_brax_fluid()


def env_names() -> tuple[str, ...]:
  # brax keeps its registry in the dict brax_envs._envs
  return tuple(sorted((*brax_envs._envs, *minatar.NAMES)))


def is_minatar(name: str) -> bool:
  return name in minatar.NAMES


def is_discrete(env) -> bool:
  """True for an env with a discrete action space (MinAtar): actions are one-hot vectors
  of `env.action_size`, the number of actions. Brax's envs are continuous."""
  return bool(getattr(env, "discrete", False))


def frame_shape(env) -> tuple[int, int, int] | None:
  """(H, W, C) of an env whose observations are flattened frames (MinAtar), else None:
  what makes the policy and the reward members conv nets and clips drawn frames."""
  return tuple(env.frame_shape) if is_discrete(env) else None


def check_name_and_backend(name: str, backend: str) -> None:
  """Raises ValueError listing the valid choices for an unknown env name or backend (which
  MinAtar games ignore)."""
  if name not in env_names():
    raise ValueError(f"Unknown environment {name!r}; choose one of: {', '.join(env_names())}.")
  if is_minatar(name):
    return
  if backend not in BACKENDS:
    raise ValueError(f"Unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}.")


# Brax envs whose episodes end when the body falls (their `terminate_when_unhealthy`).
FALLING_ENVS = ("hopper", "walker2d", "ant", "humanoid")


def make_training_env(config) -> brax_envs.Env:
  """The env of `config.env` that a learner trains in (`make_env` of its keys)."""
  kwargs = {} if config.env.terminate_when_unhealthy else {"terminate_when_unhealthy": False}
  return make_env(
    config.env.name,
    config.env.backend,
    episode_length=config.env.episode_length,
    action_repeat=config.env.action_repeat,
    **kwargs,
  )


def make_env(
  name: str,
  backend: str = "spring",
  episode_length: int = 1000,
  action_repeat: int = 1,
  **env_kwargs,
) -> brax_envs.Env:
  """A vectorized, auto-resetting Brax env (or MinAtar game) with episode cut-off and
  action repeat."""
  check_name_and_backend(name, backend)
  if episode_length <= 0 or action_repeat <= 0:
    raise ValueError(
      f"episode_length and action_repeat must be positive, got {episode_length} and "
      f"{action_repeat}."
    )
  if is_minatar(name):
    return minatar.make_env(name, episode_length, action_repeat, **env_kwargs)
  env = brax_envs.get_environment(name, backend=backend, **env_kwargs)
  return brax_envs.training.wrap(env, episode_length=episode_length, action_repeat=action_repeat)


def control_dt(env: brax_envs.Env, action_repeat: int = 1) -> float:
  """Seconds of simulated time between two agent decisions."""
  return float(env.dt) * action_repeat
