"""Our PPO against Brax's own, side by side in one process.

  python experiments/compare_brax_ppo.py --envs=inverted_pendulum,reacher,hopper --seeds=0,1,2

  python experiments/compare_brax_ppo.py --envs=halfcheetah --brax=published --seeds=0,1,2

  python experiments/compare_brax_ppo.py --envs=all --seeds=0,1,2 --resume \
      --csv=docs/paper/compare_brax_ppo.csv
  python experiments/compare_brax_ppo.py --summarize --csv=docs/paper/compare_brax_ppo.csv

`--csv` is rewritten as each seed ends; with `--resume` the (env, seed, Brax settings)
rows it already holds are kept and not run again, so an interrupted run of the eight
tasks (hours on a CPU) goes on where it stopped; `--summarize` only prints the table of
the rows it holds.

For each env, both trainers get the same env, backend, hyperparameters (from
`configs/<env>.py`), env-step budget and seeds; with `--brax=published`, Brax's PPO runs
instead with the hyperparameters Brax publishes for that task (BRAX_PUBLISHED: five of
the paper's eight; the others keep ours), still on our backend and budget. Each final
policy is then scored by the same judge, Brax's own `acting.Evaluator` (128 envs, one
full episode each, stochastic policy as in Brax's default). Printed per env:

  return: mean final eval return over seeds of each trainer, and of the initial policy;
  return ratio: (ours - initial) / (brax - initial), the share of Brax's improvement over
    the untrained policy that ours achieves (meaningful for negative returns too);
  steps/s: the median over chunks (ours) and epochs after the second (Brax, which
    compiles in its first two) of env steps per second of training, so compilation is
    left out of both.

Brax 0.14.2 calls `jax.device_put_replicated`, which jax 0.10 removed; `_shim_jax`
puts back an equivalent for Brax's use (replicate a pytree over local devices).
"""

import argparse
import contextlib
import functools
import json
import os
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _shim_jax():
  if hasattr(jax, "device_put_replicated"):
    return

  def device_put_replicated(tree, devices):
    # One copy per device, stacked on a leading axis that Brax's pmap maps over.
    return jax.pmap(lambda _: tree, devices=devices)(jnp.arange(len(devices)))

  jax.device_put_replicated = device_put_replicated


_shim_jax()

# Brax's first import loads MJX, which prints "Failed to import warp" (an optional GPU
# backend) to stdout; stdout carries these scripts' tables and JSON, so that goes to stderr.
with contextlib.redirect_stdout(sys.stderr):
  from brax import envs as brax_envs  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import label_efficiency as tables  # noqa: E402  (its CSV reading and writing, its task list)
from brax.training.agents.ppo import networks as brax_ppo_networks  # noqa: E402
from brax.training.agents.ppo import train as brax_ppo_train  # noqa: E402

from rlhf_jax import config as config_lib  # noqa: E402
from rlhf_jax import envs, evaluation, ppo  # noqa: E402
from rlhf_jax import train as rlhf_train  # noqa: E402

# Brax's own PPO settings for the paper's tasks, from its training notebook
# (google/brax, notebooks/training.ipynb); it publishes SAC settings for hopper and
# walker2d and none for swimmer, where --brax=published runs Brax with ours.
_BALANCE = dict(
  reward_scaling=10.0,
  unroll_length=5,
  num_minibatches=32,
  num_updates_per_batch=4,
  discounting=0.97,
  learning_rate=3e-4,
  entropy_cost=1e-2,
  num_envs=2048,
  batch_size=1024,
)
BRAX_PUBLISHED = {
  "inverted_pendulum": _BALANCE,
  "inverted_double_pendulum": _BALANCE,
  "reacher": dict(
    reward_scaling=5.0,
    action_repeat=4,
    unroll_length=50,
    num_minibatches=32,
    num_updates_per_batch=8,
    discounting=0.95,
    learning_rate=3e-4,
    entropy_cost=1e-3,
    num_envs=2048,
    batch_size=256,
  ),
  "halfcheetah": dict(
    reward_scaling=1.0,
    unroll_length=20,
    num_minibatches=32,
    num_updates_per_batch=8,
    discounting=0.95,
    learning_rate=3e-4,
    entropy_cost=1e-3,
    num_envs=2048,
    batch_size=512,
  ),
  "ant": dict(_BALANCE, num_envs=4096, batch_size=2048),
}


def brax_config(config, settings: str):
  """The config Brax's PPO runs: ours (`settings == "ours"`), or for "published" ours
  with Brax's published hyperparameters and default network sizes (policy 4 x 32, value
  5 x 256) where it has them; env, backend and env-step budget stay ours."""
  if settings == "ours" or config.env.name not in BRAX_PUBLISHED:
    return config
  config = config.copy_and_resolve_references()
  for key, value in BRAX_PUBLISHED[config.env.name].items():
    if key == "action_repeat":
      config.env.action_repeat = value
    else:
      config.ppo[key] = value
  config.ppo.policy_hidden_sizes = (32,) * 4
  config.ppo.value_hidden_sizes = (256,) * 5
  return config


def budget(config) -> tuple[int, int]:
  """(total env steps, number of chunks) that both trainers run."""
  chunks = config_lib.num_chunks(config)
  return chunks * config_lib.env_steps_per_chunk(config), chunks


def run_brax(config, seed: int, log=lambda line: None):
  """Brax's PPO with our config's hyperparameters; returns (params, steps/s list, wall s).
  `log` gets a line per epoch."""
  ppo = config.ppo
  total, chunks = budget(config)
  sps = []
  progress = functools.partial(brax_progress, sps, total, log)

  start = time.perf_counter()
  _, params, _ = brax_ppo_train.train(
    environment=brax_envs.get_environment(config.env.name, backend=config.env.backend),
    num_timesteps=total,
    num_evals=chunks + 1,  # one epoch per chunk of ours
    run_evals=False,
    episode_length=config.env.episode_length,
    action_repeat=config.env.action_repeat,
    num_envs=ppo.num_envs,
    unroll_length=ppo.unroll_length,
    batch_size=ppo.batch_size,
    num_minibatches=ppo.num_minibatches,
    num_updates_per_batch=ppo.num_updates_per_batch,
    learning_rate=ppo.learning_rate,
    entropy_cost=ppo.entropy_cost,
    discounting=ppo.discounting,
    gae_lambda=ppo.gae_lambda,
    clipping_epsilon=ppo.clipping_epsilon,
    reward_scaling=ppo.reward_scaling,
    normalize_observations=ppo.normalize_observations,
    normalize_advantage=ppo.normalize_advantage,
    vf_loss_coefficient=ppo.value_loss_coefficient,  # both: coefficient * ½ E[error²]
    max_grad_norm=ppo.max_grad_norm or None,
    network_factory=functools.partial(
      brax_ppo_networks.make_ppo_networks,
      policy_hidden_layer_sizes=tuple(ppo.policy_hidden_sizes),
      value_hidden_layer_sizes=tuple(ppo.value_hidden_sizes),
    ),
    seed=seed,
    progress_fn=progress,
  )
  return params, sps, time.perf_counter() - start


def steady_rates(brax_rates: list[float]) -> list[float]:
  """Brax's epoch rates without its first two epochs, which include compilation: it
  compiles its pmapped training epoch in the first epoch and again in the second
  (`JAX_LOG_COMPILES=1` shows the same ~17 s compile twice on hopper). With fewer than
  three epochs, the last one."""
  return brax_rates[2:] or brax_rates[-1:]


def brax_progress(sps: list, total: int, log, step, metrics):
  """Brax's progress_fn: keeps each epoch's env steps/s in `sps` and logs a line."""
  if "training/sps" in metrics:
    sps.append(float(metrics["training/sps"]))
    log(f"  brax: {step:>12,} of {total:,} env steps | {sps[-1]:>9,.0f} steps/s")


def run_ours(config, seed: int, workdir: str, stream=None):
  """Our trainer on `config` with `seed`; its line per chunk goes to `stream` (default:
  none)."""
  config = config.copy_and_resolve_references()
  config.seed = seed
  start = time.perf_counter()
  with open(os.devnull, "w") as quiet:
    result = rlhf_train.train(config, workdir, stream=stream or quiet)
  wall = time.perf_counter() - start
  learner = result.trainer.learner
  params = learner.brax_params(result.state.agent)
  initial_params = learner.brax_params(result.trainer.init(jax.random.PRNGKey(seed)).agent)
  return params, initial_params, result.records, wall, learner.networks


def evaluate(config, networks, params, seed: int) -> float:
  """Mean return of 128 full episodes, judged by Brax's own evaluator."""
  return evaluation.evaluate(config, networks, params, jax.random.PRNGKey(1000 + seed))


class RowsCsv:
  """Per-seed rows in a CSV (none when `path` is None), rewritten whole as each row is
  added. With `resume`, the rows the file already holds are kept: `earlier` finds one by
  its key fields, and rows not run again stay in the file."""

  def __init__(self, path: str | None, resume: bool, key: tuple[str, ...]):
    self.path, self.key, self.done = path, key, []
    resume = resume and path and os.path.exists(path)
    self.kept = tables.read_csv(*os.path.split(path)) if resume else []

  def earlier(self, **fields) -> dict | None:
    matches = [r for r in self.kept if all(r.get(k) == v for k, v in fields.items())]
    return matches[0] if matches else None

  def add(self, row: dict) -> None:
    self.done.append(row)
    if self.path:
      keys = {tuple(r[k] for k in self.key) for r in self.done}
      rest = [r for r in self.kept if tuple(r[k] for k in self.key) not in keys]
      tables.write_csv(self.path, self.done + rest)


def compare_env(
  name: str,
  seeds: list[int],
  total_env_steps: int | None,
  log,
  settings: str = "ours",
  rows_csv: RowsCsv | None = None,
) -> list[dict]:
  """One env's rows, a seed at a time; rows `rows_csv` already holds (same env, seed and
  Brax settings) are reused, and each new row is added to it as it ends."""
  rows_csv = rows_csv or RowsCsv(None, False, ())
  config = config_lib.load(os.path.join(REPO, "configs", f"{name}.py"))
  if total_env_steps:
    config.total_env_steps = total_env_steps
  config_lib.validate(config)
  if config.ppo.minibatches != "sequences":
    raise ValueError(
      f"configs/{name}.py sets ppo.minibatches={config.ppo.minibatches!r}; Brax's PPO "
      "has only whole-sequence minibatches, so the two would not run the same algorithm."
    )
  theirs = brax_config(config, settings)
  env = envs.make_env(name, config.env.backend)
  brax_networks = ppo.make_networks(env.observation_size, env.action_size, theirs.ppo)
  brax_settings = "published" if theirs is not config else "ours"
  rows = []
  for seed in seeds:
    earlier = rows_csv.earlier(env=name, seed=seed, brax_settings=brax_settings)
    if earlier:
      rows.append(earlier)
      continue
    log(f"{name}, seed {seed}: ours, then Brax's PPO")
    with tempfile.TemporaryDirectory() as workdir:
      ours, initial, records, our_wall, networks = run_ours(config, seed, workdir, sys.stderr)
    brax_params, brax_sps, brax_wall = run_brax(theirs, seed, log)
    row = {
      "env": name,
      "seed": seed,
      "brax_settings": brax_settings,
      "env_steps": budget(config)[0],
      "initial_return": evaluate(config, networks, initial, seed),
      "ours_return": evaluate(config, networks, ours, seed),
      "brax_return": evaluate(theirs, brax_networks, brax_params, seed),
      "ours_steps_per_second": statistics.median(r["steps_per_second"] for r in records),
      "brax_steps_per_second": statistics.median(steady_rates(brax_sps)),
      "ours_wall_seconds": our_wall,
      "brax_wall_seconds": brax_wall,
    }
    log(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}))
    rows.append(row)
    rows_csv.add(row)
  return rows


def summarize(rows: list[dict]) -> dict:
  mean = lambda key: statistics.fmean(r[key] for r in rows)  # noqa: E731
  initial, ours, brax = mean("initial_return"), mean("ours_return"), mean("brax_return")
  return {
    "env": rows[0]["env"],
    "brax_settings": rows[0]["brax_settings"],
    "seeds": len(rows),
    "env_steps": rows[0]["env_steps"],
    "initial_return": initial,
    "ours_return": ours,
    "brax_return": brax,
    "return_ratio": (ours - initial) / (brax - initial),
    "ours_steps_per_second": mean("ours_steps_per_second"),
    "brax_steps_per_second": mean("brax_steps_per_second"),
    "speed_ratio": mean("ours_steps_per_second") / mean("brax_steps_per_second"),
  }


def summarize_csv(path: str, names: list[str] | None = None) -> list[dict]:
  """The table of a --csv's rows without running anything: a line per (env, Brax
  settings), over the seeds it holds, in the paper's task order; only `names` if given."""
  groups = {}
  for row in tables.read_csv(*os.path.split(path)):
    if names is None or row["env"] in names:
      groups.setdefault((row["env"], row["brax_settings"]), []).append(row)
  order = {name: i for i, name in enumerate(tables.PAPER_TASKS)}
  keys = sorted(groups, key=lambda key: (order.get(key[0], len(order)), key))
  return [summarize(groups[key]) for key in keys]


def format_table(summaries: list[dict]) -> str:
  header = (
    f"{'env':<26}{'seeds':>6}{'env steps':>12}{'initial':>10}{'ours':>10}{'brax':>10}"
    f"{'ret ratio':>10}{'ours sps':>11}{'brax sps':>11}{'sps ratio':>10}  brax settings"
  )
  lines = [header, "-" * len(header)]
  for s in summaries:
    lines.append(
      f"{s['env']:<26}{s['seeds']:>6}{s['env_steps']:>12,}{s['initial_return']:>10.1f}"
      f"{s['ours_return']:>10.1f}{s['brax_return']:>10.1f}{s['return_ratio']:>10.2f}"
      f"{s['ours_steps_per_second']:>11,.0f}{s['brax_steps_per_second']:>11,.0f}"
      f"{s['speed_ratio']:>10.2f}  {s['brax_settings']}"
    )
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument(
    "--envs",
    default=None,
    help="comma-separated, or 'all' (default: inverted_pendulum,reacher,hopper; with "
    "--summarize, every env in --csv)",
  )
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument(
    "--total_env_steps",
    type=int,
    default=None,
    help="override every config's budget (for a quick try)",
  )
  parser.add_argument(
    "--brax",
    choices=("ours", "published"),
    default="ours",
    help="Brax's PPO hyperparameters: the same as ours, or its published ones where it "
    "has them (inverted_pendulum, inverted_double_pendulum, reacher, halfcheetah, ant)",
  )
  parser.add_argument("--csv", default=None, help="also write the per-seed rows here")
  parser.add_argument(
    "--resume", action="store_true", help="keep --csv's rows and run only the missing ones"
  )
  parser.add_argument(
    "--summarize",
    action="store_true",
    help="only print the table of --csv's rows (every env in it, or --envs if given)",
  )
  args = parser.parse_args(argv)
  if args.summarize:
    if not args.csv or not os.path.exists(args.csv):
      parser.error(f"--summarize reads --csv, and {args.csv!r} is not a file")
    names = args.envs.split(",") if args.envs and args.envs != "all" else None
    summaries = summarize_csv(args.csv, names)
    print(format_table(summaries), flush=True)
    return summaries
  seeds = [int(s) for s in args.seeds.split(",")]
  envs = args.envs or "inverted_pendulum,reacher,hopper"
  names = list(tables.PAPER_TASKS) if envs == "all" else envs.split(",")
  log = functools.partial(print, file=sys.stderr, flush=True)
  log(f"devices: {jax.devices()}")
  rows_csv = RowsCsv(args.csv, args.resume, ("env", "seed", "brax_settings"))
  summaries = []
  for name in names:
    rows = compare_env(name, seeds, args.total_env_steps, log, args.brax, rows_csv)
    summaries.append(summarize(rows))
  print(format_table(summaries), flush=True)
  return summaries


if __name__ == "__main__":
  main()
