"""PPO's networks for discrete actions on frames (MinAtar): a categorical policy and a
small convolutional torso.

`brax.training.distribution` has no categorical distribution; `Categorical` has the
interface Brax's PPO networks expose (`sample_no_postprocessing`, `postprocess`,
`log_prob`, `entropy`, `mode`), so `policy.sample_actions`, `ppo.ppo_loss` and Brax's
`make_inference_fn` (used by `evaluation.py`) take it as they take the tanh-normal one.
An action is a one-hot float32 vector [..., num_actions]: it is `Transition.action` and
`Transition.raw_action` as is (no tanh, `postprocess` is the identity), the reward model
reads it like a continuous action, and the MinAtar env takes its argmax.

The torso follows the MinAtar baselines (Young & Tian 2019): one convolution of 16 3x3
filters (stride 1, no padding) with ReLU, flattened, then dense ReLU layers (the config's
hidden sizes; MinAtar's is one of 128) and the output layer. Policy and value are separate
networks, as Brax's PPO networks are; or pgx's network (`PgxTower`, one each), or pgx's
network as pgx has it, one torso under both heads (`PgxActorCritic`, `ppo.torso =
"pgx_shared"`), which halves the convolutions, most of an update's work on the CPU.
"""

from collections.abc import Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
from brax.training import networks as brax_networks
from brax.training.agents.ppo import networks as brax_ppo_networks
from flax import linen

CONV_FEATURES = 16
CONV_KERNEL = (3, 3)


class Categorical:
  """A categorical distribution over `num_actions` actions, parameterized by logits
  [..., num_actions]; actions are one-hot float32 [..., num_actions]."""

  def __init__(self, num_actions: int):
    self.param_size = num_actions
    self.reparametrizable = False

  def sample_no_postprocessing(self, logits, key):
    index = jax.random.categorical(key, logits)
    return jax.nn.one_hot(index, logits.shape[-1], dtype=jnp.float32)

  def postprocess(self, action):
    return action

  def inverse_postprocess(self, action):
    return action

  def sample(self, logits, key):
    return self.sample_no_postprocessing(logits, key)

  def mode(self, logits):
    return jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=jnp.float32)

  def log_prob(self, logits, action):
    """log π(a) = Σ_i a_i log softmax(logits)_i, a one-hot."""
    return jnp.sum(action * jax.nn.log_softmax(logits), axis=-1)

  def entropy(self, logits, key=None):
    """H = -Σ_i p_i log p_i, exactly (`key` unused; Brax's estimate takes one)."""
    del key
    log_p = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


class PatchConv(linen.Module):
  """`linen.Conv(features, kernel_size, padding="VALID")` (stride 1) as a matrix product:
  the same parameters (kernel [kh, kw, C, F], bias [F]), initializers and result.

  Frames [B, H, W, C] -> [B, H - kh + 1, W - kw + 1, F]. Each output pixel's patch is
  the kh x kw neighbourhood's channels in row-major (row, column, channel) order, the
  order in which the kernel flattens.
  """

  features: int
  kernel_size: tuple[int, int]

  @linen.compact
  def __call__(self, x):
    kernel_h, kernel_w = self.kernel_size
    channels = x.shape[-1]
    kernel = self.param(
      "kernel", linen.initializers.lecun_normal(), (kernel_h, kernel_w, channels, self.features)
    )
    bias = self.param("bias", linen.initializers.zeros_init(), (self.features,))
    out_h, out_w = x.shape[1] - kernel_h + 1, x.shape[2] - kernel_w + 1
    patches = jnp.concatenate(
      [x[:, i : i + out_h, j : j + out_w, :] for i in range(kernel_h) for j in range(kernel_w)],
      axis=-1,
    )  # [B, out_h, out_w, kh * kw * C]
    return patches @ kernel.reshape(-1, self.features) + bias


def conv() -> PatchConv:
  """The torso's convolution; named as `linen.Conv` would be, so parameters interchange."""
  return PatchConv(CONV_FEATURES, CONV_KERNEL, name="Conv_0")


class ConvTorso(linen.Module):
  """Flattened frames [..., H * W * C] -> [..., output_size]."""

  frame_shape: tuple[int, int, int]
  hidden_sizes: Sequence[int]
  output_size: int

  @linen.compact
  def __call__(self, obs):
    batch_shape = obs.shape[:-1]
    x = obs.reshape((-1, *self.frame_shape))
    x = linen.relu(conv()(x))
    x = x.reshape((x.shape[0], -1))
    for size in self.hidden_sizes:
      x = linen.relu(linen.Dense(size)(x))
    x = linen.Dense(self.output_size)(x)
    return x.reshape((*batch_shape, self.output_size))


def pgx_torso(obs, frame_shape):
  """pgx's torso, inside a compact module: flattened frames [B, H * W * C] -> features
  [B, 64]: a convolution of 32 2x2 filters (SAME padding as Haiku's: the extra row and
  column after), ReLU, 2x2 average pooling, a dense ReLU layer of 64."""
  x = obs.reshape((-1, *frame_shape))
  x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
  x = linen.relu(PatchConv(32, (2, 2), name="Conv_0")(x))
  x = linen.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")
  return linen.relu(linen.Dense(64)(x.reshape((x.shape[0], -1))))


class PgxTower(linen.Module):
  """pgx's MinAtar PPO network (examples/minatar-ppo/train.py) as one tower: `pgx_torso`,
  then `hidden_sizes` tanh layers (pgx: 64, 64) and the output layer. Flattened frames
  [..., H * W * C] -> [..., output_size]. pgx shares the torso between policy and value
  (`PgxActorCritic`); here, as Brax's PPO networks are, each has its own."""

  frame_shape: tuple[int, int, int]
  hidden_sizes: Sequence[int]
  output_size: int

  @linen.compact
  def __call__(self, obs):
    batch_shape = obs.shape[:-1]
    x = pgx_torso(obs, self.frame_shape)
    for size in self.hidden_sizes:
      x = jnp.tanh(linen.Dense(size)(x))
    x = linen.Dense(self.output_size)(x)
    return x.reshape((*batch_shape, self.output_size))


class PgxActorCritic(linen.Module):
  """pgx's MinAtar PPO network as pgx has it: one `pgx_torso` under two heads of tanh
  layers, the policy's logits and the value. Flattened frames [..., H * W * C] ->
  (logits [..., num_actions], value [...]). The torso, most of the work, runs once for
  both and learns from both losses."""

  frame_shape: tuple[int, int, int]
  policy_hidden_sizes: Sequence[int]
  value_hidden_sizes: Sequence[int]
  num_actions: int

  @linen.compact
  def __call__(self, obs):
    batch_shape = obs.shape[:-1]
    features = pgx_torso(obs, self.frame_shape)
    heads = []
    for name, sizes, size_out in (
      ("policy", self.policy_hidden_sizes, self.num_actions),
      ("value", self.value_hidden_sizes, 1),
    ):
      x = features
      for i, size in enumerate(sizes):
        x = jnp.tanh(linen.Dense(size, name=f"{name}_{i}")(x))
      heads.append(linen.Dense(size_out, name=f"{name}_out")(x))
    logits, value = heads
    return logits.reshape((*batch_shape, self.num_actions)), value.reshape(batch_shape)


TORSOS = {"minatar": ConvTorso, "pgx": PgxTower}


def _network(module, observation_size, preprocess_observations_fn, squeeze=False):
  def init(key):
    return module.init(key, jnp.zeros((1, observation_size), jnp.float32))

  def apply(processor_params, params, obs):
    out = module.apply(params, preprocess_observations_fn(obs, processor_params))
    return jnp.squeeze(out, axis=-1) if squeeze else out

  return brax_networks.FeedForwardNetwork(init=init, apply=apply)


@flax.struct.dataclass
class SharedPPONetworks(brax_ppo_networks.PPONetworks):
  """PPONetworks whose policy and value share a torso: `policy_network` (what Brax's
  `make_inference_fn` and acting use) holds every parameter and gives the logits;
  `actor_critic(normalizer, policy_params, obs) -> (logits, values)` gives both in one
  pass (`ppo.logits_and_values`); `value_network` has no parameters of its own."""

  actor_critic: Any


def _no_value_of_its_own(processor_params, params, obs):
  raise ValueError(
    "with a shared torso (ppo.torso='pgx_shared') the value needs the policy's parameters: "
    "use ppo.value_of(networks, params, normalizer, obs)."
  )


def make_ppo_networks(
  frame_shape: tuple[int, int, int],
  num_actions: int,
  preprocess_observations_fn,
  policy_hidden_sizes: Sequence[int] = (128,),
  value_hidden_sizes: Sequence[int] = (128,),
  torso: str = "minatar",
) -> brax_ppo_networks.PPONetworks:
  """Brax's PPONetworks record with a categorical policy and conv torsos (`TORSOS`:
  "minatar", `ConvTorso`; "pgx", `PgxTower`); `apply` takes (normalizer, params, obs
  [..., H * W * C]) as Brax's networks do. "pgx_shared": `PgxActorCritic`, one torso
  under both heads, as a `SharedPPONetworks`."""
  observation_size = frame_shape[0] * frame_shape[1] * frame_shape[2]
  distribution = Categorical(num_actions)
  if torso == "pgx_shared":
    module = PgxActorCritic(
      tuple(frame_shape), tuple(policy_hidden_sizes), tuple(value_hidden_sizes), num_actions
    )

    def actor_critic(processor_params, params, obs):
      return module.apply(params, preprocess_observations_fn(obs, processor_params))

    return SharedPPONetworks(
      policy_network=brax_networks.FeedForwardNetwork(
        init=lambda key: module.init(key, jnp.zeros((1, observation_size), jnp.float32)),
        apply=lambda *args: actor_critic(*args)[0],
      ),
      value_network=brax_networks.FeedForwardNetwork(
        init=lambda key: {}, apply=_no_value_of_its_own
      ),
      parametric_action_distribution=distribution,
      actor_critic=actor_critic,
    )
  tower = TORSOS[torso]
  policy = tower(tuple(frame_shape), tuple(policy_hidden_sizes), num_actions)
  value = tower(tuple(frame_shape), tuple(value_hidden_sizes), 1)
  return brax_ppo_networks.PPONetworks(
    policy_network=_network(policy, observation_size, preprocess_observations_fn),
    value_network=_network(value, observation_size, preprocess_observations_fn, squeeze=True),
    parametric_action_distribution=distribution,
  )
