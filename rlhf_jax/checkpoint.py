"""Checkpoints of the whole train state with orbax, and what a resume may change.

Host side (not jittable). A run's checkpoints live in `<workdir>/checkpoints/<chunk>/`:

  state/  the TrainState pytree, i.e. everything the run carries from one chunk to the
          next: policy and value parameters and their optimizer state, the observation
          normalizer, the env states, the PRNG key, the iteration counter and, for a
          preference run, the segment cutter and buffer, the preference buffer, the reward
          ensemble with its optimizer state, L2 weights, input and reward normalizers, and
          the label counters. The label schedule is a function of the config.
  meta/   JSON: the chunk, env steps and elapsed seconds at the save, the resolved
          config, and a fingerprint of `state` that a restore checks.

Saves are asynchronous: orbax copies the arrays off the device before `save` returns
(so the next chunk may donate them) and writes the files in a background thread. A
checkpoint that fails to restore or whose arrays do not match their fingerprint is skipped
for the one before it, and moved to `<workdir>/corrupt_checkpoints/` once that one
restores; if none restores, the run stops rather than start over.
"""

import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from rlhf_jax import config as config_lib

# Config keys (or prefixes ending in ".") that a resumed run may change; any other
# difference from the checkpointed run's config is refused.
# A state restores onto any mesh (then equal to float tolerance, not bitwise).
HARMLESS = ("checkpoint.", "mesh", "human.")


def config_dict(config) -> dict:
  """The config as plain JSON values (tuples become lists), as stored in meta."""
  return json.loads(config.to_json_best_effort())


def config_changes(saved: dict, config) -> list[str]:
  """`"key: old -> new"` for each dotted key whose value differs between a saved config
  dict and `config`, leaving out HARMLESS ones, and keys that a later version of the
  library added (absent from `saved`) where `config` keeps their default: the saved run
  ran as that default does."""
  old, new = _flatten(saved), _flatten(config_dict(config))
  defaults = _flatten(config_dict(config_lib.default_config()))
  changes = []
  for key in sorted(set(old) | set(new)):
    if any(key == h or (h.endswith(".") and key.startswith(h)) for h in HARMLESS):
      continue
    before, after = old.get(key, "<absent>"), new.get(key, "<absent>")
    if key not in old and key in defaults and after == defaults[key]:
      continue
    if before != after:
      changes.append(f"{key}: {before!r} -> {after!r}")
  return changes


def _flatten(tree: dict, prefix: str = "") -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def barrier(name: str) -> None:
  """Waits for every process of a multi-host run (a no-op with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def _words(leaf):
  """A leaf's bits as uint32 words (wider types split, narrower ones zero-extended)."""
  if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  if leaf.dtype == jnp.bool_:
    return leaf.astype(jnp.uint32)
  unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[leaf.dtype.itemsize]
  return jax.lax.bitcast_convert_type(leaf, unsigned).astype(jnp.uint32)


@jax.jit
def fingerprint(tree) -> jax.Array:
  """A uint32 checksum of every bit of a pytree of arrays. Integer sums wrap exactly and
  do not depend on the order of reduction, so sharded and unsharded copies agree."""
  total = jnp.zeros((), jnp.uint32)
  for index, leaf in enumerate(jax.tree.leaves(tree)):
    words = _words(leaf).ravel()
    # Odd multipliers (even + odd): a flip of any one bit changes the sum.
    position = jnp.arange(words.size, dtype=jnp.uint32) * jnp.uint32(2 * 2654435761 % 2**32)
    total = total + jnp.sum(words * (position + jnp.uint32(2 * index + 1)), dtype=jnp.uint32)
  return total


class Checkpointer:
  """Keeps the last `keep` checkpoints of a run under `<workdir>/checkpoints/`."""

  def __init__(self, workdir: str, keep: int):
    self.workdir = workdir
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, chunk: int, state, meta: dict) -> None:
    """Starts saving `state` as chunk `chunk`; returns once the arrays are off the device."""
    meta = dict(meta, chunk=chunk, fingerprint=int(fingerprint(state)))
    args = ocp.args.Composite(
      state=ocp.args.StandardSave(_without_empty(state)), meta=ocp.args.JsonSave(meta)
    )
    self._manager.save(chunk, args=args, force=True)

  def restore_latest(self, abstract_state, log) -> tuple | None:
    """(state, meta) of the newest checkpoint that restores intact, or None if there is
    none. `abstract_state` (ShapeDtypeStructs with shardings) gives types and placement.
    Newer checkpoints that fail are reported through `log` and, once an older one has
    restored, moved aside. If every checkpoint fails (a changed state layout, say) the
    run is not restarted: RuntimeError with each one's reason."""
    failed = []
    for step in sorted(self.steps(), reverse=True):
      try:
        meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        meta = meta.meta
        restored = self._manager.restore(
          step,
          args=ocp.args.Composite(state=ocp.args.StandardRestore(_without_empty(abstract_state))),
        )
        state = _with_empty(abstract_state, restored.state)
        if int(fingerprint(state)) != meta["fingerprint"]:
          raise ValueError("its arrays do not match the fingerprint saved with them")
      except Exception as error:  # noqa: BLE001 -- any failure means: try the one before
        log(f"checkpoint {step} in {self.directory} is unreadable ({_short(error)}); skipping it")
        failed.append((step, _short(error)))
        continue
      for bad, _ in failed:
        self._move_aside(bad)
      return state, meta
    if failed:
      reasons = "; ".join(f"{step}: {reason}" for step, reason in failed)
      raise RuntimeError(
        f"no checkpoint in {self.directory} restores ({reasons}). Move them away to start "
        "over, or use a new --workdir."
      )
    return None

  def saved_config(self) -> dict | None:
    """The config stored with the newest checkpoint whose meta reads back, if any."""
    for step in sorted(self.steps(), reverse=True):
      try:
        meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
      except Exception:  # noqa: BLE001 -- restore_latest reports and moves it
        continue
      return meta.meta["config"]
    return None

  def _move_aside(self, step: int) -> None:
    """Moves a damaged checkpoint to <workdir>/corrupt_checkpoints/ (process 0 moves;
    every process restores the same files, so all of them skip the same ones)."""
    if jax.process_index() == 0:
      corrupt = os.path.join(self.workdir, "corrupt_checkpoints")
      os.makedirs(corrupt, exist_ok=True)
      destination = os.path.join(corrupt, str(step))
      if os.path.exists(destination):
        shutil.rmtree(destination)
      shutil.move(os.path.join(self.directory, str(step)), destination)
    barrier(f"moved checkpoint {step} aside")
    self._manager.reload()

  def wait(self) -> None:
    """Blocks until every started save is on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def _is_empty(leaf) -> bool:
  return math.prod(leaf.shape) == 0


def _without_empty(tree):
  """`tree` with its zero-size arrays (pgx's Asterix keeps one) as None: orbax refuses to
  save them, and they hold nothing to save."""
  return jax.tree.map(lambda leaf: None if _is_empty(leaf) else leaf, tree)


def _with_empty(abstract_tree, restored):
  """The restored tree with its zero-size arrays put back, typed and placed as in
  `abstract_tree` (ShapeDtypeStructs with shardings)."""

  def fill(abstract, leaf):
    if abstract is None or not _is_empty(abstract):  # None: a field the state leaves empty
      return leaf
    return jax.device_put(jnp.zeros(abstract.shape, abstract.dtype), abstract.sharding)

  return jax.tree.map(fill, abstract_tree, restored, is_leaf=lambda x: x is None)


def _short(error: Exception) -> str:
  text = f"{type(error).__name__}: {error}"
  return text if len(text) < 300 else text[:300] + "..."
