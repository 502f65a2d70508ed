"""Throughput: Brax's PPO, our PPO, and the whole preference loop, in one process.

  python experiments/benchmark.py --env=hopper
  python experiments/benchmark.py --env=ant --sweep=64,128,256,512 --json

On the same env, backend, num_envs, unroll length and batch (from `configs/<env>.py`):

  (a) brax  `brax.training.agents.ppo.train` on the true reward
  (b) ppo   our PPO on the true reward (`rlhf_jax.train.train`)
  (c) pref  the full preference loop with the simulated oracle (on all devices, and on
            one device too when there are several): rollout, segments,
            queries, teacher, reward-ensemble update, learned reward, PPO; its settings
            come from `configs/<env>_pref.py` when there is one, else from the base
            config with `reward.source = "learned"`

Each runs `--chunks` chunks (Brax: as many epochs of the same env steps). Printed per
trainer: env steps/s, the median over chunks (Brax: over epochs after the second, since
it compiles in its first two) so that compilation is left out;
and startup seconds, the wall time minus the env steps at that rate (compilation,
initialization, for (c) the initial labels). Then the ratios (b)/(a), (c)/(a) and (c)/(b).
MinAtar games (`--env=minatar_breakout`, ...) have no Brax trainer: (a) is left out and
(c)/(b) is the ratio that counts. A few chunks hold all of (c)'s label budget, so queries
come far more often than in a full run; `--keep_label_rate` scales the budget to the env
steps measured instead (MinAtar's 5,500 labels over 20M env steps: about 90 in 4 chunks).
`--repeats N` runs the three N times, interleaved (a, b, c, a, b, c, ...), and keeps each
trainer's fastest run: on a shared machine other work only ever slows a run down, so the
fastest is the closest to what the code costs, and interleaving exposes the three to the
same spells of load. The JSON keeps every run's rate (`steps_per_second_runs`).
`--sweep` repeats the three at other num_envs (batch_size scaled along, and the
iterations per chunk inversely, so that a chunk keeps about its env steps) and shows how
throughput grows; `--update_every_env_steps N` gives (c) one reward-model update per N env
steps at every num_envs, the amortized schedule (0: its config's). `--json` prints one
JSON object instead of the tables.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from compare_brax_ppo import REPO, run_brax, steady_rates  # noqa: E402  (also shims jax for Brax)

from rlhf_jax import config as config_lib  # noqa: E402
from rlhf_jax import envs, train  # noqa: E402


def configs(
  env: str, chunks: int, num_envs: int | None, update_every: int = 0, keep_label_rate=False
):
  """(true-reward config, preference config) with the same PPO sizes and budget;
  `update_every` > 0 sets the preference config's reward.update_every_env_steps;
  `keep_label_rate` scales the label budget with the env steps, so that labels come at
  the full run's average rate rather than all within the chunks measured."""
  base_path = os.path.join(REPO, "configs", f"{env}.py")
  if os.path.exists(base_path):
    base = config_lib.load(base_path)
  else:
    base = config_lib.default_config()
    base.env.name = env
  pref_path = os.path.join(REPO, "configs", f"{env}_pref.py")
  if os.path.exists(pref_path):
    pref = config_lib.load(pref_path)
  else:
    pref = base.copy_and_resolve_references()
    pref.reward.source = "learned"
  if update_every:
    pref.reward.update_every_env_steps = update_every
  full_run_env_steps = pref.total_env_steps
  for config in (base, pref):
    if num_envs:  # the batch scales along: the same number of unrolls per iteration
      # and a chunk keeps about the config's env steps (4,096 envs would otherwise make
      # chunks of 64x the steps of 64 envs).
      scale = num_envs / config.ppo.num_envs
      config.ppo.batch_size = max(1, round(config.ppo.batch_size * scale))
      config.iterations_per_chunk = max(1, round(config.iterations_per_chunk / scale))
      config.ppo.num_envs = num_envs
    config.total_env_steps = chunks * config_lib.env_steps_per_chunk(config)
    config.checkpoint.every_chunks = chunks + 1  # only the final save
  if keep_label_rate:
    share = pref.total_env_steps / full_run_env_steps
    pref.queries.total_labels = max(round(pref.queries.total_labels * share), 2)
    pref.queries.initial_fraction = max(
      pref.queries.initial_fraction, 1 / pref.queries.total_labels
    )  # at least one initial label
  for config in (base, pref):
    config_lib.validate(config)
  return base, pref


def measure_ours(config) -> dict:
  with tempfile.TemporaryDirectory() as workdir, open(os.devnull, "w") as quiet:
    start = time.perf_counter()
    result = train.train(config, workdir, stream=quiet)
    wall = time.perf_counter() - start
  rate = statistics.median(r["steps_per_second"] for r in result.records)
  steps = result.records[-1]["env_steps"]
  return {"steps_per_second": rate, "startup_seconds": wall - steps / rate, "env_steps": steps}


def measure_brax(config) -> dict:
  _, rates, wall = run_brax(config, config.seed)
  rate = statistics.median(steady_rates(rates))
  steps = config.total_env_steps
  return {"steps_per_second": rate, "startup_seconds": wall - steps / rate, "env_steps": steps}


def fastest(runs: list[dict]) -> dict:
  """The run with the highest rate, with every run's rate alongside."""
  best = max(runs, key=lambda run: run["steps_per_second"])
  return dict(best, steps_per_second_runs=[run["steps_per_second"] for run in runs])


def measure(
  env: str,
  chunks: int,
  num_envs: int | None,
  log,
  repeats: int = 1,
  update_every: int = 0,
  keep_label_rate: bool = False,
) -> dict:
  base, pref = configs(env, chunks, num_envs, update_every, keep_label_rate)
  row = {
    "env": env,
    "backend": base.env.backend,
    "num_envs": base.ppo.num_envs,
    "unroll_length": base.ppo.unroll_length,
    "batch_size": base.ppo.batch_size,
    "num_minibatches": base.ppo.num_minibatches,
  }
  trainers = (
    ("brax", measure_brax, base),
    ("ppo", measure_ours, base),
    ("pref", measure_ours, pref),
  )
  if envs.is_minatar(base.env.name):  # Brax's PPO runs Brax envs only
    trainers = trainers[1:]
  runs = {name: [] for name, _, _ in trainers}
  for repeat in range(repeats):
    for name, run, config in trainers:
      runs[name].append(run(config))
      log(f"{env} num_envs={row['num_envs']} {name} run {repeat}: {json.dumps(runs[name][-1])}")
  row.update({name: fastest(name_runs) for name, name_runs in runs.items()})
  if jax.device_count() > 1:  # (c) again on one device: what the mesh adds
    one = pref.copy_and_resolve_references()
    one.mesh = (("data", 1),)
    row["pref_1_device"] = measure_ours(one)
    log(f"{env} num_envs={row['num_envs']} pref_1_device: {json.dumps(row['pref_1_device'])}")
    row["ratio_pref_devices_over_1"] = (
      row["pref"]["steps_per_second"] / row["pref_1_device"]["steps_per_second"]
    )
  for a, b in (("ppo", "brax"), ("pref", "brax"), ("pref", "ppo")):  # None: b did not run
    ratio = row[a]["steps_per_second"] / row[b]["steps_per_second"] if b in row else None
    row[f"ratio_{a}_over_{b}"] = ratio
  return row


def _rate(row: dict, trainer: str) -> str:
  return f"{row[trainer]['steps_per_second']:,.0f}" if trainer in row else "-"


def _ratio(value) -> str:
  return "-" if value is None else f"{value:.2f}"


def format_rows(rows: list[dict]) -> str:
  """The table; a trainer that did not run (Brax on MinAtar) shows as '-'."""
  header = (
    f"{'env':<10}{'backend':>10}{'envs':>6}{'brax sps':>11}{'ppo sps':>11}{'pref sps':>11}"
    f"{'ppo/brax':>10}{'pref/brax':>10}{'pref/ppo':>10}{'startup s (brax/ppo/pref)':>28}"
  )
  lines = [header, "-" * len(header)]
  for r in rows:
    startup = "/".join(
      f"{r[k]['startup_seconds']:.1f}" if k in r else "-" for k in ("brax", "ppo", "pref")
    )
    lines.append(
      f"{r['env']:<10}{r['backend']:>10}{r['num_envs']:>6}"
      f"{_rate(r, 'brax'):>11}{_rate(r, 'ppo'):>11}{_rate(r, 'pref'):>11}"
      f"{_ratio(r['ratio_ppo_over_brax']):>10}{_ratio(r['ratio_pref_over_brax']):>10}"
      f"{_ratio(r['ratio_pref_over_ppo']):>10}{startup:>28}"
    )
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--env", default="hopper", help="uses configs/<env>.py if present")
  parser.add_argument("--chunks", type=int, default=5, help="chunks (Brax: epochs) per run, >= 3")
  parser.add_argument("--sweep", default="", help="other num_envs to measure, e.g. 64,128,512")
  parser.add_argument("--repeats", type=int, default=1, help="runs of each, keep the fastest")
  parser.add_argument("--json", action="store_true", help="print one JSON object")
  parser.add_argument(
    "--update_every_env_steps",
    type=int,
    default=0,
    help="(c)'s reward.update_every_env_steps at every num_envs (0: its config's)",
  )
  parser.add_argument(
    "--keep_label_rate",
    action="store_true",
    help="scale (c)'s label budget to the env steps measured: labels at the full run's "
    "average rate (default: the whole budget within the chunks measured, which costs more)",
  )
  args = parser.parse_args(argv)
  log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
  device = f"{jax.devices()[0].platform}: {jax.devices()[0].device_kind} x{jax.device_count()}"
  log(f"devices: {device}")
  if args.repeats < 1 or args.chunks < 3:
    parser.error(
      "--repeats must be at least 1 and --chunks at least 3 (Brax compiles in its first two epochs)"
    )
  every = args.update_every_env_steps
  keep = args.keep_label_rate
  main_row = measure(args.env, args.chunks, None, log, args.repeats, every, keep)
  sweep = [
    measure(args.env, args.chunks, int(n), log, args.repeats, every, keep)
    for n in args.sweep.split(",")
    if n
  ]
  result = dict(main_row, device=device, sweep=sweep)
  if args.json:
    print(json.dumps(result))
  else:
    print(f"device: {device}")
    print(format_rows([main_row]))
    if "pref_1_device" in main_row:
      print(
        f"preference loop on {jax.device_count()} devices / on 1: "
        f"{main_row['ratio_pref_devices_over_1']:.2f}"
      )
    if sweep:
      print("\nnum_envs sweep:")
      print(format_rows(sorted(sweep + [main_row], key=lambda r: r["num_envs"])))
  return result


if __name__ == "__main__":
  main()
