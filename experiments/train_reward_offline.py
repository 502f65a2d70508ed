"""Fits the reward model to a saved preference dataset and reports held-out accuracy.

  python -m rlhf_jax.labeling.dataset --workdir=runs/ip_pref --data_dir=datasets
  python experiments/train_reward_offline.py --data_dir=datasets \
      --config=configs/inverted_pendulum_pref.py --steps=2000

The dataset's pairs are split at random: `--test_fraction` is held out and never trained
on. The model and its training are the run's (`reward.*` of `--config`: ensemble, L2
adaptation on its own validation split, bootstrap), so the number says how well that
reward model learns these labels. Printed: the untrained ensemble's accuracy on the
held-out pairs (the baseline: about 0.5, though a random network already ranks some
tasks' segments better than chance), then progress, then the fitted ensemble's. Pairs
labelled "equally good" count toward the loss, not the accuracy (NaN if all are).
"""

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rlhf_jax import config as config_lib  # noqa: E402
from rlhf_jax import preference, reward_model  # noqa: E402
from rlhf_jax.labeling import dataset  # noqa: E402
from rlhf_jax.types import Segment  # noqa: E402


def segments(arrays: dict, index) -> Segment:
  return Segment(*(jnp.asarray(arrays[field][index]) for field in Segment._fields))


def split_pairs(count: int, test_fraction: float, seed: int):
  """(test, train): index arrays of a random split of `count` pairs."""
  order = np.random.default_rng(seed).permutation(count)
  num_test = max(1, int(round(count * test_fraction)))
  return order[:num_test], order[num_test:]


def fit(
  arrays: dict,
  config,
  steps: int,
  test_fraction: float,
  seed: int,
  log=print,
  frame_shape=None,
) -> dict:
  """Trains on a random (1 - test_fraction) of the pairs (`split_pairs`); returns the
  accuracies. `frame_shape` (the dataset's meta has it for MinAtar): conv members."""
  count = len(arrays["label"])
  test, train = split_pairs(count, test_fraction, seed)
  num_test = len(test)
  if len(train) < 2:
    raise ValueError(f"{count} pairs are too few to hold {num_test} out and train on the rest")
  first, second = arrays["first"], arrays["second"]
  obs_size, action_size = first["obs"].shape[-1], first["action"].shape[-1]
  # The run's preference machinery, its buffer sized to hold every training pair.
  config = config.copy_and_resolve_references()
  config.segments.length = first["obs"].shape[1]
  config.env.episode_length = max(config.env.episode_length, config.segments.length)
  config.queries.buffer_size = len(train)
  prefs = preference.Preferences(
    config, obs_size, action_size, control_dt=1.0, frame_shape=frame_shape
  )
  key_init, key_add, key_fit = jax.random.split(jax.random.PRNGKey(seed), 3)
  train_first, train_second = segments(first, train), segments(second, train)
  state = prefs.empty(key_init, jax.tree.map(lambda x: x[:1, 0], train_first))
  everything = jnp.ones(len(train), bool)
  labels = jnp.asarray(arrays["label"][train])
  state = prefs.ingest(state, key_add, train_first, train_second, labels, everything, everything)
  test_pairs = (segments(first, test), segments(second, test), arrays["label"][test])
  for side in (train_first, train_second):
    state = prefs.observe_inputs(state, side)  # a no-op unless reward.normalize_inputs
  accuracy = lambda: reward_model.ensemble_accuracy(prefs.model, state.reward_model, *test_pairs)
  untrained = accuracy()
  log(f"{count} pairs: training on {len(train)}, holding out {num_test}")
  log(f"untrained ensemble: held-out accuracy {untrained:.3f}")
  update = jax.jit(prefs.fit, static_argnums=2)
  every = max(1, min(steps, 200))
  start = time.perf_counter()
  done, metrics = 0, {}
  while done < steps:
    chunk = min(every, steps - done)
    state, metrics = update(state, jax.random.fold_in(key_fit, done), chunk)
    done += chunk
    held_out = accuracy()
    log(
      f"step {done:>6}  train loss {float(metrics['rm_train_loss']):.3f}  train accuracy "
      f"{float(metrics['rm_train_accuracy']):.3f}  held-out accuracy {held_out:.3f}"
    )
  result = {
    "pairs": count,
    "train_pairs": int(len(train)),
    "test_pairs": int(num_test),
    "steps": steps,
    "untrained_test_accuracy": untrained,
    "test_accuracy": held_out,
    "train_accuracy": float(metrics["rm_train_accuracy"]),
    "seconds": time.perf_counter() - start,
  }
  log(f"held-out accuracy {result['test_accuracy']:.3f} (untrained {untrained:.3f})")
  return result


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--name", default=dataset.NAME)
  parser.add_argument("--config", default=None, help="config file for reward.* (default: defaults)")
  parser.add_argument("--steps", type=int, default=2000)
  parser.add_argument("--test_fraction", type=float, default=0.2)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
  args = parser.parse_args(argv)
  if not 0 < args.test_fraction < 1:
    parser.error(f"--test_fraction must be in (0, 1), got {args.test_fraction}")
  if args.steps <= 0:
    parser.error(f"--steps must be positive, got {args.steps}")
  config = config_lib.load(args.config) if args.config else config_lib.default_config()
  arrays, meta = dataset.load(args.data_dir, args.name)
  print(f"dataset {args.name} in {args.data_dir}: {json.dumps(meta)}", file=sys.stderr)
  frame_shape = meta.get("frame_shape")
  result = fit(arrays, config, args.steps, args.test_fraction, args.seed, frame_shape=frame_shape)
  if args.json:
    print(json.dumps(result))


if __name__ == "__main__":
  main()
