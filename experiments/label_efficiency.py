"""How many labels does PPO need? True-reward PPO against learning from 350/700/1400 labels.

  python experiments/label_efficiency.py --env=reacher --seeds=0,1,2 --out=runs/label_eff

For one env, runs `configs/<env>.py` (PPO on the true reward) and `configs/<env>_pref.py`
(the same PPO on a reward learned from a simulated oracle's labels) with each label
budget, over the same env steps and seeds. Each final policy is scored on 128 fresh full
episodes by Brax's evaluator (rlhf_jax/evaluation.py). Writes to --out:

  curves.csv            true return (chunk mean) against env steps, per run
  final.csv             the final eval return of each run
  label_efficiency.png  mean true return against env steps, one line per condition

and prints, per condition, the mean final return over seeds and its ratio to true-reward
PPO: (learned - initial) / (true - initial), the share of the true-reward run's gain
over the untrained policy (meaningful for negative returns too). The preference runs'
first iteration only collects the initial labels: they take one iteration more of env
steps than the true-reward run. CSVs are rewritten as each run ends; `--resume` reruns
only the (condition, seed) pairs they lack.
"""

import argparse
import csv
import functools
import os
import statistics
import sys
import tempfile

import jax

from rlhf_jax import config as config_lib
from rlhf_jax import evaluation, metrics, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(config, seed: int, condition: str, log):
  """Trains one run; returns (its curve rows, its final row)."""
  config = config.copy_and_resolve_references()
  config.seed = seed
  with tempfile.TemporaryDirectory() as workdir, open(os.devnull, "w") as quiet:
    result = train.train(config, workdir, stream=quiet)
  key = jax.random.PRNGKey(1000 + seed)
  networks = result.trainer.networks
  final = evaluation.evaluate(config, networks, evaluation.brax_params(result.state.ppo), key)
  initial_state = result.trainer.init(jax.random.PRNGKey(seed)).ppo
  initial = evaluation.evaluate(config, networks, evaluation.brax_params(initial_state), key)
  last = result.records[-1]
  row = {
    "condition": condition,
    "seed": seed,
    "env_steps": last["env_steps"],
    "labels_used": last.get("labels_used", 0),
    "initial_return": initial,
    "final_return": final,
    "rm_true_correlation": last.get("rm_true_correlation"),
    "steps_per_second": statistics.median(r["steps_per_second"] for r in result.records),
  }
  log(", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
  curve = [
    {
      "condition": condition,
      "seed": seed,
      "env_steps": r["env_steps"],
      "return": r["true_return"],
    }
    for r in result.records
  ]
  return curve, row


def summarize(rows: list[dict]) -> list[dict]:
  by_condition = {}
  for row in rows:
    by_condition.setdefault(row["condition"], []).append(row)
  true_rows = by_condition["true reward"]
  initial = statistics.fmean(r["initial_return"] for r in true_rows)
  true_return = statistics.fmean(r["final_return"] for r in true_rows)
  summaries = []
  for condition, group in by_condition.items():
    returns = [r["final_return"] for r in group]
    mean = statistics.fmean(returns)
    summaries.append(
      {
        "condition": condition,
        "seeds": len(group),
        "labels": group[0]["labels_used"],
        "return": mean,
        "std": statistics.pstdev(returns),
        "ratio": (mean - initial) / (true_return - initial),
        "steps_per_second": statistics.fmean(r["steps_per_second"] for r in group),
      }
    )
  return summaries


def format_table(env: str, summaries: list[dict], initial: float) -> str:
  header = (
    f"{'condition':<14}{'seeds':>6}{'labels':>8}{'return':>10}{'± std':>9}{'ratio':>8}"
    f"{'steps/s':>10}"
  )
  lines = [f"{env}: initial (untrained) return {initial:.1f}", header, "-" * len(header)]
  for s in summaries:
    lines.append(
      f"{s['condition']:<14}{s['seeds']:>6}{s['labels']:>8}{s['return']:>10.1f}{s['std']:>9.1f}"
      f"{s['ratio']:>8.2f}{s['steps_per_second']:>10,.0f}"
    )
  return "\n".join(lines)


def plot(curves: list[dict], path: str, title: str) -> None:
  """Mean true return over seeds against env steps, one line per condition."""
  lines = {}
  for condition in dict.fromkeys(c["condition"] for c in curves):
    points = {}
    for c in curves:
      if c["condition"] == condition and c["return"] is not None:
        points.setdefault(c["env_steps"], []).append(c["return"])
    lines[condition] = [(step, statistics.fmean(points[step])) for step in sorted(points)]
  metrics.plot_lines(lines, path, title, "true return (mean over seeds)")


def write_csv(path: str, rows: list[dict]) -> None:
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--env", default="reacher", help="uses configs/<env>.py and <env>_pref.py")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--labels", default="350,700,1400")
  parser.add_argument("--total_env_steps", type=int, default=None, help="override the budget")
  parser.add_argument("--out", default="runs/label_efficiency")
  parser.add_argument(
    "--summarize", action="store_true", help="only re-read --out's CSVs, print and plot"
  )
  parser.add_argument(
    "--resume",
    action="store_true",
    help="keep the runs already in --out's CSVs (same config and seed give the same run) "
    "and run only the missing ones",
  )
  args = parser.parse_args(argv)
  if args.summarize:
    return report(
      args.env, read_csv(args.out, "curves.csv"), read_csv(args.out, "final.csv"), args.out
    )
  log = functools.partial(print, file=sys.stderr, flush=True)
  log(f"devices: {jax.devices()}")
  base = config_lib.load(os.path.join(REPO, "configs", f"{args.env}.py"))
  preference = config_lib.load(os.path.join(REPO, "configs", f"{args.env}_pref.py"))
  if args.total_env_steps:
    base.total_env_steps = preference.total_env_steps = args.total_env_steps
  conditions = [("true reward", base)]
  for labels in (int(n) for n in args.labels.split(",")):
    config = preference.copy_and_resolve_references()
    config.queries.total_labels = labels
    conditions.append((f"{labels} labels", config))
  for _, config in conditions:
    config_lib.validate(config)

  os.makedirs(args.out, exist_ok=True)
  curves, rows = [], []
  if args.resume and os.path.exists(os.path.join(args.out, "final.csv")):
    curves, rows = read_csv(args.out, "curves.csv"), read_csv(args.out, "final.csv")
    log(f"resuming: {len(rows)} runs already in {args.out}")
  done = {(row["condition"], row["seed"]) for row in rows}
  curves = [c for c in curves if (c["condition"], c["seed"]) in done]
  for seed in (int(s) for s in args.seeds.split(",")):
    for condition, config in conditions:
      if (condition, seed) in done:
        continue
      curve, row = run(config, seed, condition, log)
      curves += curve
      rows.append(row)
      write_csv(os.path.join(args.out, "curves.csv"), curves)  # kept current as runs end
      write_csv(os.path.join(args.out, "final.csv"), rows)
  return report(args.env, curves, rows, args.out)


def report(env: str, curves: list[dict], rows: list[dict], out: str) -> list[dict]:
  plot(curves, os.path.join(out, "label_efficiency.png"), env)
  summaries = summarize(rows)
  initial = statistics.fmean(r["initial_return"] for r in rows if r["condition"] == "true reward")
  print(format_table(env, summaries, initial), flush=True)
  return summaries


def read_csv(out: str, name: str) -> list[dict]:
  """Rows written by write_csv, with numbers parsed back (empty cells become None)."""

  def parse(value: str):
    if value == "":
      return None
    try:
      return int(value)
    except ValueError:
      try:
        return float(value)
      except ValueError:
        return value

  with open(os.path.join(out, name), newline="", encoding="utf-8") as f:
    return [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(f)]


if __name__ == "__main__":
  main()
