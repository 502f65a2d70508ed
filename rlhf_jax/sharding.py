"""The device mesh and where each part of the train state lives on it.

One mesh axis, `data`, over all devices by default (`config.mesh = (("data", -1),)`).
The train step is `jax.jit` with these `NamedSharding`s as in/out shardings and the state
donated; XLA inserts the collectives (the gradient all-reduce, the all-gather of the
segments cut from each device's envs) where the shardings require them.

Placement, and why:
- env states, the per-env segment cutter and running learned returns: split over `data`
  along the env axis. The physics, the rollout and the reward of each step are the bulk
  of the work and need nothing from other devices.
- PPO's minibatches: split over `data` along their sequences (`data_splitter`).
  The shuffle mixes envs of every device, and left to itself XLA gathered each whole
  minibatch on every device, so 2 devices ran at 0.7x of 1; split, each device computes
  the gradient of its share, and XLA all-reduces it.
- the reward model's minibatches of labelled pairs, its validation pairs, the candidate
  pairs scored for queries, the segments sampled for `rm_true_correlation`: split over
  `data` along the pairs (segments), for the same reason. Each device gathers its share
  from the replicated buffers and computes its share.
- SAC's replay buffer: one ring per device, split over `data` along the rings. Each
  device's envs write to its ring and its share of every minibatch is drawn from it
  (Brax's SAC keeps a buffer per device too), so no step crosses devices; relabeling
  computes each ring's rewards where it lives.
- network parameters, optimizer states, normalizers, keys, counters: replicated. They are
  small, and every device needs all of them for its envs and its share of the minibatch.
- the segment and preference buffers: replicated. They are a few MB, queries are drawn
  uniformly from the whole buffer, and the reward model trains on random minibatches of
  labels: split buffers would turn each of those draws into a cross-device gather, where
  replication costs one all-gather of the few hundred new segments per iteration.
"""

import math

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA = "data"


def initialize_multihost(coordinator_address=None, num_processes=None, process_id=None):
  """`jax.distributed.initialize`, to be called before anything else touches JAX. With no
  arguments JAX detects them on SLURM, Open MPI, Kubernetes and Cloud TPU. After it,
  `jax.devices()` lists every process's devices and the mesh spans them all."""
  # CPU devices of different processes talk through gloo (no effect on GPU/TPU).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
    coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
  )


def make_mesh(config, devices=None) -> jax.sharding.Mesh:
  """The mesh of `config.mesh`: ((axis name, size), ...); one size may be -1 (the rest).
  Without a -1 it may use fewer devices than there are: the first ones."""
  devices = jax.devices() if devices is None else devices
  names = tuple(name for name, _ in config.mesh)
  sizes = [size for _, size in config.mesh]
  if DATA not in names:
    raise ValueError(f"config.mesh={config.mesh!r} needs a {DATA!r} axis.")
  known = math.prod(size for size in sizes if size != -1)
  sizes = [len(devices) // known if size == -1 else size for size in sizes]
  if not 0 < math.prod(sizes) <= len(devices):
    raise ValueError(
      f"config.mesh={config.mesh!r} asks for {math.prod(sizes)} devices; there are "
      f"{len(devices)}. Use -1 for one axis to take the rest."
    )
  devices = devices[: math.prod(sizes)]
  # Brax's reset/step fail under Explicit axes (a scatter's sharding type); Auto works.
  auto = (jax.sharding.AxisType.Auto,) * len(names)
  return jax.make_mesh(tuple(sizes), names, axis_types=auto, devices=devices)


def data_size(mesh) -> int:
  return mesh.shape[DATA]


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_splitter(mesh):
  """`shard(tree, axis)`: a sharding constraint that splits `axis` of each leaf over `data`,
  for batches whose elements need nothing from each other (minibatches, pairs of
  segments). Leaves whose `axis` does not divide evenly over the devices are left to XLA.
  On one device it is the identity."""
  size = data_size(mesh)
  if size == 1:
    return lambda tree, axis: tree

  def shard(tree, axis):
    spec = NamedSharding(mesh, P(*([None] * axis), DATA))
    place = lambda x: x if x.shape[axis] % size else jax.lax.with_sharding_constraint(x, spec)
    return jax.tree.map(place, tree)

  return shard


def state_shardings(mesh, abstract_state, num_envs: int, seed_axis: bool = False):
  """NamedShardings for a TrainState (or its `jax.eval_shape`), placed as described above.
  `seed_axis`: every array has a leading axis of independent seeds (kept whole)."""
  whole = replicated(mesh)
  lead = int(seed_axis)

  def env_axis(axis):
    axis += lead

    def place(leaf):
      if leaf.ndim > axis and leaf.shape[axis] == num_envs:
        return NamedSharding(mesh, P(*([None] * axis), DATA))
      return whole

    return place

  shardings = jax.tree.map(lambda _: whole, abstract_state)
  shardings = shardings.replace(env_state=jax.tree.map(env_axis(0), abstract_state.env_state))
  if hasattr(abstract_state.agent, "replay"):  # SAC: [D, C / D, ...] rings, one per device
    rings = NamedSharding(mesh, P(*([None] * lead), DATA))
    replay = shardings.agent.replay
    replay = replay._replace(data=jax.tree.map(lambda _: rings, replay.data))
    shardings = shardings.replace(agent=shardings.agent.replace(replay=replay))
  prefs = abstract_state.preferences
  if prefs is not None:
    cutter = prefs.cutter
    cutter = cutter._replace(
      tail=jax.tree.map(env_axis(1), cutter.tail),  # [K-1, N, ...]
      steps_in_episode=env_axis(0)(cutter.steps_in_episode),
    )
    shardings = shardings.replace(
      preferences=shardings.preferences.replace(
        cutter=cutter, learned_return=env_axis(0)(prefs.learned_return)
      )
    )
  return shardings


def num_passes(rows: int, steps_per_pass: int) -> int:
  """The fewest passes, dividing `rows` evenly, with at most `steps_per_pass` rows each
  (big batches are computed a pass at a time to bound their memory; the axis split over
  devices stays whole in each pass, so every device works in every pass)."""
  passes = -(-rows // steps_per_pass)
  while rows % passes:
    passes += 1
  return passes
