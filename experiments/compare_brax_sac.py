"""Our SAC against Brax's own, side by side in one process.

  python experiments/compare_brax_sac.py --envs=hopper,walker2d --seeds=0,1,2

For each env, `configs/<env>_sac.py` gives both trainers the env, backend,
hyperparameters, env-step budget and seeds: `brax.training.agents.sac.train` gets the
same number of envs, batch size, gradient steps per env step, learning rate (its
temperature's Adam step is fixed at 3e-4, as is ours by default), discount, reward
scaling, Polyak step, replay sizes and networks; its target entropy is -0.5 per action
dimension, as `config.sac.target_entropy` by default. Each final policy is then scored by
the same judge as in `compare_brax_ppo.py`, Brax's `acting.Evaluator` (128 envs, one full
episode each, stochastic policy). Printed per env, as there: the mean final return over
seeds of each trainer and of the initial policy, the return ratio (ours - initial) /
(brax - initial), and env steps per second of training (ours: the median over chunks that
took gradient steps; Brax: the median over epochs after its first two, which compile).
"""

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_brax_ppo as side_by_side  # noqa: E402  (also puts back jax.device_put_replicated)
from brax import envs as brax_envs  # noqa: E402
from brax.training.agents.sac import networks as brax_sac_networks  # noqa: E402
from brax.training.agents.sac import train as brax_sac_train  # noqa: E402
from flax import linen  # noqa: E402

from rlhf_jax import config as config_lib  # noqa: E402
from rlhf_jax import evaluation  # noqa: E402

REPO = side_by_side.REPO
BRAX_TEMPERATURE_LEARNING_RATE = 3e-4  # fixed inside brax.training.agents.sac.train
BRAX_TARGET_ENTROPY = -0.5  # per action dimension, fixed there too


def check_comparable(config) -> None:
  """Brax's SAC has no setting for these; a config that changes them is not compared."""
  sac = config.sac
  fixed = {
    "sac.alpha_learning_rate": (sac.alpha_learning_rate, BRAX_TEMPERATURE_LEARNING_RATE),
    "sac.target_entropy": (sac.target_entropy, BRAX_TARGET_ENTROPY),
    "sac.unroll_length": (sac.unroll_length, 1),
    "sac.unsupervised_env_steps": (sac.unsupervised_env_steps, 0),
    "reward.source": (config.reward.source, "true"),
  }
  for key, (ours, brax) in fixed.items():
    if ours != brax:
      raise ValueError(f"config.{key} is {ours!r}; Brax's SAC runs only with {brax!r}.")


def brax_num_evals(config) -> int:
  """Brax's epochs: one per chunk of ours, so that both report rates at the same spacing."""
  return config_lib.num_chunks(config) + 1


def run_brax(config, seed: int, log=lambda line: None):
  """Brax's SAC with our config's hyperparameters; returns (params, steps/s list, wall s).
  `log` gets a line per epoch."""
  sac = config.sac
  total, _ = side_by_side.budget(config)
  sps = []
  progress = functools.partial(side_by_side.brax_progress, sps, total, log)

  start = time.perf_counter()
  _, params, _ = brax_sac_train.train(
    environment=brax_envs.get_environment(config.env.name, backend=config.env.backend),
    num_timesteps=total,
    num_evals=brax_num_evals(config),
    episode_length=config.env.episode_length,
    action_repeat=config.env.action_repeat,
    num_envs=sac.num_envs,
    learning_rate=sac.learning_rate,
    discounting=sac.discount,
    seed=seed,
    batch_size=sac.batch_size,
    normalize_observations=sac.normalize_observations,
    reward_scaling=sac.reward_scaling,
    tau=sac.tau,
    min_replay_size=sac.min_replay_size,
    max_replay_size=sac.max_replay_size,
    grad_updates_per_step=sac.grad_updates_per_step,
    network_factory=functools.partial(
      brax_sac_networks.make_sac_networks,
      hidden_layer_sizes=tuple(sac.hidden_sizes),
      activation=linen.relu,
    ),
    progress_fn=progress,
  )
  return params, sps, time.perf_counter() - start


def training_rates(config, records: list[dict]) -> list[float]:
  """Our chunks' env steps/s, leaving out those that began before the buffer held
  `min_replay_size` steps (no gradient step yet), as Brax's rates leave out its prefill."""
  per_chunk = config_lib.env_steps_per_chunk(config)
  rates = [
    r["steps_per_second"]
    for r in records
    if r["env_steps"] - per_chunk >= config.sac.min_replay_size
  ]
  return rates or [r["steps_per_second"] for r in records[-1:]]


def compare_env(
  name: str,
  seeds: list[int],
  total_env_steps: int | None,
  log,
  rows_csv: side_by_side.RowsCsv | None = None,
):
  """One env's rows, a seed at a time; rows `rows_csv` already holds (same env and seed)
  are reused, and each new row is added to it as it ends."""
  rows_csv = rows_csv or side_by_side.RowsCsv(None, False, ())
  config = config_lib.load(os.path.join(REPO, "configs", f"{name}_sac.py"))
  if total_env_steps:
    config.total_env_steps = total_env_steps
  config_lib.validate(config)
  check_comparable(config)
  rows = []
  for seed in seeds:
    earlier = rows_csv.earlier(env=name, seed=seed)
    if earlier:
      rows.append(earlier)
      continue
    log(f"{name}, seed {seed}: ours, then Brax's SAC")
    with tempfile.TemporaryDirectory() as workdir:
      run = side_by_side.run_ours(config, seed, workdir, sys.stderr)
      ours, initial, records, our_wall, networks = run
    brax_params, brax_sps, brax_wall = run_brax(config, seed, log)
    score = functools.partial(
      evaluation.evaluate,
      config,
      networks,
      key=jax.random.PRNGKey(1000 + seed),
      make_inference_fn=brax_sac_networks.make_inference_fn,
    )
    row = {
      "env": name,
      "seed": seed,
      "brax_settings": "ours",
      "env_steps": side_by_side.budget(config)[0],
      "initial_return": score(initial),
      "ours_return": score(ours),
      "brax_return": score(brax_params),
      "ours_steps_per_second": statistics.median(training_rates(config, records)),
      "brax_steps_per_second": statistics.median(side_by_side.steady_rates(brax_sps)),
      "ours_wall_seconds": our_wall,
      "brax_wall_seconds": brax_wall,
    }
    log(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}))
    rows.append(row)
    rows_csv.add(row)
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--envs", default="hopper,walker2d", help="each uses configs/<env>_sac.py")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--total_env_steps", type=int, default=None, help="override the budget")
  parser.add_argument("--csv", default=None, help="also write the per-seed rows here")
  parser.add_argument(
    "--resume", action="store_true", help="keep --csv's rows and run only the missing seeds"
  )
  args = parser.parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(",")]
  log = functools.partial(print, file=sys.stderr, flush=True)
  log(f"devices: {jax.devices()}")
  rows_csv = side_by_side.RowsCsv(args.csv, args.resume, ("env", "seed"))
  summaries = []
  for name in args.envs.split(","):
    rows = compare_env(name, seeds, args.total_env_steps, log, rows_csv)
    summaries.append(side_by_side.summarize(rows))
  print(side_by_side.format_table(summaries), flush=True)
  return summaries


if __name__ == "__main__":
  main()
