"""MinAtar games (Young & Tian 2019, arXiv 1903.03176) as batched envs shaped like Brax's.

The games come from pgx (`pgx.make("minatar-breakout")`, ...): pgx 2.6 ships all five
MinAtar games (asterix, breakout, freeway, seaquest, space_invaders; the `pgx-minatar`
package holds the same code and is not needed). Why pgx and not gymnax:
- games: pgx has all five; gymnax has four (no Seaquest).
- correctness: pgx-minatar's tests step its deterministic dynamics state by state against
  the original MinAtar (`minatar.Environment`) over many random episodes; pgx keeps the
  original's sticky actions (probability 0.1) and minimal action sets.
- speed: about the same. On this 2-core CPU (busy with other runs), 512 envs x 200 random
  steps in one `lax.scan`, env steps/s pgx vs gymnax: breakout 2.7M vs 3.4M, asterix
  1.0M vs 0.39M, freeway 0.85M vs 0.48M, space_invaders 0.59M vs 0.59M; seaquest (pgx
  only) 46k, the slowest by far.
- dependencies: pgx needs only svgwrite besides jax; gymnax pulls gymnasium and seaborn.
The MinAtar dynamics are GPL-3 (pgx keeps the original's license for them); we only
import them.

`make_env(name, episode_length)` returns what `envs.make_env` returns for Brax: `reset(keys
[N, 2])` and `step(state, action)` over N envs (vmapped), auto-reset, a
`brax.envs.base.State` with
  obs          uint8 [N, 10 * 10 * C]: the game's boolean frame as 0/1, flattened
               (`frame_shape` gives (10, 10, C) back); uint8 because rollouts and the
               segment buffers hold many of them (the networks promote it to float32)
  reward, done float32 [N]
  info         'steps', 'truncation', 'episode_done', 'episode_metrics' {'sum_reward',
               'length'}, 'first_obs' (as Brax's training wrappers), and 'key' [N, 2]: each
               env's own key, from which its sticky actions and its resets are drawn
  pipeline_state  `Game(q, game)`: `game` is pgx's state; `q` float32 [N, 1] is a
               placeholder for `Transition.qpos` (a frame is all there is to draw, and it is
               the observation)
Actions: one-hot float32 [N, num_actions] (what the categorical policy samples; it fits
`Transition.action` as is) or integers [N]. Unlike Brax's AutoResetWrapper, which goes
back to the env's first state, a finished game restarts from a fresh `init` drawn with the
env's key: MinAtar's initial states are random. Episodes end when the game does or after
`episode_length` steps; a cut that is not a game over sets `info['truncation']` to 1, as
Brax's EpisodeWrapper does.
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
from brax.envs.base import State

GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")
PREFIX = "minatar-"
NAMES = tuple(PREFIX + game for game in GAMES)
# Not simulated time (MinAtar has frames only): with it, config.SEGMENT_SECONDS (1.5 s)
# gives segments of 25 steps, the clip length Christiano et al. 2017 used for Atari.
DT = 0.06


@flax.struct.dataclass
class Game:
  q: jax.Array  # float32 [1]: placeholder for Transition.qpos
  game: Any  # pgx's state of the game


class MinAtarEnv:
  """One MinAtar game, batched over the envs of a state; see the module docstring."""

  discrete = True
  dt = DT
  backend = "pgx"

  def __init__(self, name: str, episode_length: int, **game_kwargs):
    import pgx  # noqa: PLC0415  (slow to import; only MinAtar runs need it)

    game = pgx.make(name)
    self.game = type(game)(**game_kwargs) if game_kwargs else game
    self.name = name
    self.episode_length = episode_length
    example = jax.eval_shape(self.game.init, jax.random.PRNGKey(0))
    self.frame_shape = tuple(example.observation.shape)
    self.observation_size = int(jnp.prod(jnp.asarray(self.frame_shape)))
    self.action_size = int(example.legal_action_mask.shape[0])

  def _observe(self, game) -> jax.Array:
    return game.observation.reshape(-1).astype(jnp.uint8)

  def _reset_one(self, key) -> State:
    key, key_init = jax.random.split(key)
    game = self.game.init(key_init)
    obs = self._observe(game)
    zero = jnp.zeros((), jnp.float32)
    info = {
      "steps": zero,
      "truncation": zero,
      "episode_done": zero,
      "episode_metrics": {"sum_reward": zero, "length": zero},
      "first_obs": obs,
      "key": key,
    }
    return State(Game(jnp.zeros((1,), jnp.float32), game), obs, zero, zero, {}, info)

  def _step_one(self, state: State, action) -> State:
    """One env: the game's step, the episode's bookkeeping, then a fresh game if it ended."""
    info = state.info
    key, key_step, key_init = jax.random.split(info["key"], 3)
    game = self.game.step(state.pipeline_state.game, action, key_step)
    reward = game.rewards[0].astype(jnp.float32)
    restart = 1.0 - info["episode_done"]  # the previous step ended an episode: start over
    steps = info["steps"] * restart + 1.0
    over = game.terminated | game.truncated
    cut = steps >= self.episode_length
    done = (over | cut).astype(jnp.float32)
    truncation = (cut & ~over).astype(jnp.float32)
    episode = info["episode_metrics"]
    episode = {
      "sum_reward": episode["sum_reward"] * restart + reward,
      "length": episode["length"] * restart + 1.0,
    }

    fresh = self.game.init(key_init)
    game = jax.tree.map(lambda new, old: jnp.where(done > 0, new, old), fresh, game)
    obs = self._observe(game)
    info = {
      "steps": steps,  # as Brax's: the ended episode's length until the next step
      "truncation": truncation,
      "episode_done": done,
      "episode_metrics": episode,
      "first_obs": jnp.where(done > 0, obs, info["first_obs"]),
      "key": key,
    }
    return State(Game(state.pipeline_state.q, game), obs, reward, done, {}, info)

  def reset(self, keys: jax.Array) -> State:
    """keys: [N, 2], one per env."""
    return jax.vmap(self._reset_one)(keys)

  def step(self, state: State, action: jax.Array) -> State:
    """action: one-hot float32 [N, num_actions], or int [N]."""
    if action.ndim == 2:
      action = jnp.argmax(action, axis=-1)
    return jax.vmap(self._step_one)(state, action.astype(jnp.int32))


def make_env(name: str, episode_length: int = 1000, action_repeat: int = 1, **game_kwargs):
  """A batched, auto-resetting MinAtar game; `game_kwargs` go to pgx's game class (e.g.
  `sticky_action_prob=0.0`)."""
  if action_repeat != 1:
    raise ValueError(
      f"MinAtar games have no action repeat (frame skip): env.action_repeat must be 1, "
      f"got {action_repeat}."
    )
  return MinAtarEnv(name, episode_length, **game_kwargs)
