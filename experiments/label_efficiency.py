"""How many labels does PPO need? True-reward PPO against learning from 350/700/1400 labels.

  python experiments/label_efficiency.py --envs=all --seeds=0,1,2 --resume --out=runs/paper
  python experiments/label_efficiency.py --envs=hopper,walker2d --labels=700 \
      --teachers=stochastic,mistake,myopic --resume --out=runs/paper
  python experiments/label_efficiency.py --envs=hopper --learner=sac --resume --out=runs/paper
  python experiments/label_efficiency.py --envs=minatar_breakout --labels=1400,5500 \
      --resume --out=runs/minatar     # any task with configs/<task>.py and <task>_pref.py

For each env, runs `configs/<env>.py` (PPO on the true reward) and `configs/<env>_pref.py`
(the same PPO on a reward learned from a simulated oracle's labels) with each label
budget, and with --teachers, B-Pref's noisy teachers at --teacher_labels labels; all over
the same env steps and seeds. With `--learner=sac` the task is `<env>_sac`: SAC on the
true reward (`configs/<env>_sac.py`) against PEBBLE (`configs/<env>_sac_pref.py`), and
the files below are named for it (`<env>_sac/`, `paper_table_sac.csv`, ...), so that
both learners' tables live side by side in one --out; where the PPO task's curves are
there too, a table says how many env steps each learner's preference runs needed to reach
the same return. Each final policy is scored on 128 fresh full episodes by Brax's
evaluator (rlhf_jax/evaluation.py). Writes to --out:

  <env>/curves.csv            true return (chunk mean) against env steps, per run
  <env>/final.csv             the final eval return of each run
  <env>/label_efficiency.png  mean true return against env steps, one line per condition
  <env>/configs.json          each run's config (--resume refuses rows of another config)
  <env>/metrics/<run>.jsonl   each run's metrics.jsonl (a line per chunk: the reward
                              model's agreement with the true reward, losses, entropy)
  paper_table.csv             one row per env: true-reward return, each budget's return
                              and ratio, steps/s
  paper_figure.png            a panel per env in the layout of the paper's Figure 1

and prints, per condition, the mean final return over seeds and its ratio to true-reward
PPO: (learned - initial) / (true - initial), the share of the true-reward run's gain
over the untrained policy (meaningful for negative returns too). The preference runs'
first iteration only collects the initial labels: they take one iteration more of env
steps than the true-reward run. CSVs are rewritten as each run ends; `--resume` reruns
only the (condition, seed) pairs they lack (and stops, naming the keys, where a kept row
ran with another config than its condition has now), so an interrupted table picks up
where it stopped, and a run cut off midway continues from its last checkpoint in
--workdirs (one cut off before its first checkpoint starts over, its files moved to
`<workdir>.interrupted<n>`). Several processes can fill one task's table (a core each):
with --resume they re-read the files before each write and keep each other's runs, and
`--no-true_reward` leaves the true-reward condition to another of them. `--summarize`
only re-reads the CSVs. While a run trains, its progress (train.py's line
per chunk) goes to `<workdirs>/<task>/<condition>_seed<seed>/train.log`. `--set
KEY=VALUE` (repeatable) changes the preference configs, not the true-reward one, for a
variant in its own --out, e.g. PEBBLE without pre-training: `--learner=sac --set
sac.unsupervised_env_steps=0`; `--set_all KEY=VALUE` changes every config (e.g. the
number of envs: `--set_all ppo.num_envs=32 --set_all ppo.batch_size=32`).
"""

import argparse
import ast
import csv
import functools
import json
import os
import re
import shutil
import statistics
import sys

import jax
import ml_collections

from rlhf_jax import checkpoint, evaluation, metrics, train
from rlhf_jax import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Christiano et al. 2017's MuJoCo tasks, in their Figure 1's order; Brax has each one.
PAPER_TASKS = (
  "inverted_pendulum",
  "inverted_double_pendulum",
  "reacher",
  "swimmer",
  "hopper",
  "walker2d",
  "halfcheetah",
  "ant",
)


def set_aside_if_unresumable(workdir: str, log) -> None:
  """An attempt cut off before its first checkpoint leaves metrics and nothing to continue
  from, and train.py refuses such a workdir; its files move to `<workdir>.interrupted<n>/`
  (kept, not deleted) so that the run starts over in a clean workdir."""
  if not os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    return
  checkpoints = checkpoint.Checkpointer(workdir, keep=1)
  resumable = checkpoints.saved_config() is not None  # what train.py resumes from
  checkpoints.close()
  if resumable:
    return
  n = 0
  while os.path.exists(f"{workdir}.interrupted{n}"):
    n += 1
  shutil.move(workdir, f"{workdir}.interrupted{n}")
  log(f"  {workdir} was cut off before its first checkpoint: moved to .interrupted{n}")


def keep_metrics(workdir: str, path: str) -> None:
  """Copies a finished run's per-chunk metrics (metrics.jsonl: the reward model's
  agreement with the true reward, losses, entropy) to `path` before its workdir goes."""
  source = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(source):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shutil.copyfile(source, path)


def run(config, seed: int, condition: str, log, workdir: str):
  """Trains one run in `workdir` (continuing from its checkpoints, if an earlier attempt
  was interrupted); returns (its curve rows, its final row)."""
  config = config.copy_and_resolve_references()
  config.seed = seed
  set_aside_if_unresumable(workdir, log)
  os.makedirs(workdir, exist_ok=True)
  progress = os.path.join(workdir, "train.log")
  log(f"  its progress, a line per chunk: {progress}")
  with open(progress, "a", buffering=1) as stream:  # line-buffered: `tail -f` follows it
    result = train.train(config, workdir, stream=stream)
  key = jax.random.PRNGKey(1000 + seed)
  learner = result.trainer.learner
  final = evaluation.evaluate_agent(config, learner, result.state.agent, key)
  initial_state = result.trainer.init(jax.random.PRNGKey(seed)).agent
  initial = evaluation.evaluate_agent(config, learner, initial_state, key)
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
  width = max([14] + [len(s["condition"]) + 2 for s in summaries])  # "700 labels, myopic"
  header = (
    f"{'condition':<{width}}{'seeds':>6}{'labels':>8}{'return':>10}{'± std':>9}{'ratio':>8}"
    f"{'steps/s':>10}"
  )
  lines = [f"{env}: initial (untrained) return {initial:.1f}", header, "-" * len(header)]
  for s in summaries:
    lines.append(
      f"{s['condition']:<{width}}{s['seeds']:>6}{s['labels']:>8}{s['return']:>10.1f}"
      f"{s['std']:>9.1f}{s['ratio']:>8.2f}{s['steps_per_second']:>10,.0f}"
    )
  return "\n".join(lines)


def returns_by_step(curves: list[dict], condition: str) -> dict[int, list[float]]:
  """{env steps: the seeds' true returns there} of one condition's curves."""
  points = {}
  for c in curves:
    if c["condition"] == condition and c["return"] is not None:
      points.setdefault(c["env_steps"], []).append(c["return"])
  return points


def plot(curves: list[dict], path: str, title: str) -> None:
  """Mean true return over seeds against env steps, one line per condition."""
  lines = {}
  for condition in dict.fromkeys(c["condition"] for c in curves):
    points = returns_by_step(curves, condition)
    lines[condition] = [(step, statistics.fmean(points[step])) for step in sorted(points)]
  metrics.plot_lines(lines, path, title, "true return (mean over seeds)")


def write_atomically(path: str, write) -> None:
  """`write(file)` into a temporary file, then renamed to `path`: a reader (another
  process filling the same --out) never sees half a file."""
  with open(path + ".tmp", "w", newline="", encoding="utf-8") as f:
    write(f)
  os.replace(path + ".tmp", path)


def write_csv(path: str, rows: list[dict]) -> None:
  def write(f):
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)

  write_atomically(path, write)


def with_runs_on_disk(out: str, curves: list, rows: list, runs_configs: dict) -> tuple:
  """This process's runs plus those another process wrote into `out` since (other
  conditions or seeds of the same task, run with --resume into the same --out)."""
  if not os.path.exists(os.path.join(out, "final.csv")):
    return curves, rows, runs_configs
  ours = {(row["condition"], row["seed"]) for row in rows}
  theirs = [r for r in read_csv(out, "final.csv") if (r["condition"], r["seed"]) not in ours]
  done = {(row["condition"], row["seed"]) for row in theirs}
  on_disk = read_csv(out, "curves.csv")
  curves = curves + [c for c in on_disk if (c["condition"], c["seed"]) in done]
  others = {k: v for k, v in read_configs(out).items() if k not in runs_configs}
  return curves, rows + theirs, {**runs_configs, **others}


def task_name(env: str, learner: str) -> str:
  """The name of an env's table row, its folder and its configs' stem: PPO's is the env."""
  return env if learner == "ppo" else f"{env}_{learner}"


def task_order(task: str) -> int:
  """A task's place in the paper's order of envs (tasks of other envs after them)."""
  env = task.removesuffix("_sac")
  return PAPER_TASKS.index(env) if env in PAPER_TASKS else len(PAPER_TASKS)


def config_paths(task: str) -> tuple[str, str]:
  """configs/<task>.py (true reward) and configs/<task>_pref.py (from labels)."""
  return tuple(os.path.join(REPO, "configs", f"{task}{s}.py") for s in ("", "_pref"))


def make_conditions(task: str, args) -> list[tuple[str, object]]:
  """(condition, config) pairs of one task: true reward, each label budget with the
  oracle, and each of --teachers with --teacher_labels labels."""
  paths = config_paths(task)
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:
    raise ValueError(f"{task}: no {' or '.join(os.path.relpath(p, REPO) for p in missing)}.")
  base, preference = (config_lib.load(p) for p in paths)
  if args.total_env_steps:
    base.total_env_steps = preference.total_env_steps = args.total_env_steps

  for item in args.set_all or ():
    override(base, item)
    override(preference, item)
  for item in args.set or ():
    override(preference, item)

  def with_labels(labels: int, teacher: str = "oracle"):
    config = preference.copy_and_resolve_references()
    config.queries.total_labels = labels
    config.teacher = teacher
    return config

  conditions = [("true reward", base)]
  conditions += [(f"{n} labels", with_labels(n)) for n in parse_ints(args.labels)]
  if args.teachers:
    n = args.teacher_labels
    conditions += [(f"{n} labels, {t}", with_labels(n, t)) for t in args.teachers.split(",")]
  for _, config in conditions:
    config_lib.validate(config)
  return conditions


def override(config, item: str) -> None:
  """Sets `config`'s dotted KEY from "KEY=VALUE" (VALUE a Python literal, else a string)."""
  key, sep, text = item.partition("=")
  *parents, name = key.split(".")
  node = config
  for part in parents:
    node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
  if not sep or not isinstance(node, ml_collections.ConfigDict) or name not in node:
    raise ValueError(f"--set {item!r}: expected KEY=VALUE with KEY a config key")
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  node[name] = value


def parse_ints(text: str) -> list[int]:
  return [int(item) for item in text.split(",") if item]


def run_env(env: str, args, log) -> tuple[list[dict], list[dict]]:
  """Runs (or, with --resume, completes) one task's conditions and seeds under
  --out/<task>/; returns its (curves, final rows)."""
  out = os.path.join(args.out, env)
  os.makedirs(out, exist_ok=True)
  conditions = make_conditions(env, args)
  curves, rows = [], []
  runs_configs = {}  # "<condition>, seed <seed>" -> the flat config it ran with
  if args.resume and os.path.exists(os.path.join(out, "final.csv")):
    curves, rows = read_csv(out, "curves.csv"), read_csv(out, "final.csv")
    runs_configs = read_configs(out)
    check_configs(out, rows, runs_configs, dict(conditions), log)
    log(f"{env}: resuming, {len(rows)} runs already in {out}")
  done = {(row["condition"], row["seed"]) for row in rows}
  curves = [c for c in curves if (c["condition"], c["seed"]) in done]
  for seed in parse_ints(args.seeds):
    for condition, config in conditions:
      if (condition, seed) in done or (condition == "true reward" and not args.true_reward):
        continue
      log(f"{env}: {condition}, seed {seed}")
      slug = condition.replace(" ", "_").replace(",", "")
      workdir = os.path.join(args.workdirs, env, f"{slug}_seed{seed}")
      curve, row = run(config, seed, condition, log, workdir)
      curves += curve
      rows.append(row)
      runs_configs[run_key(condition, seed)] = flat_config(config)
      if args.resume:  # another process may have added other runs since we read them
        curves, rows, runs_configs = with_runs_on_disk(out, curves, rows, runs_configs)
      write_csv(os.path.join(out, "curves.csv"), curves)  # kept current as runs end
      write_csv(os.path.join(out, "final.csv"), rows)
      dump = functools.partial(json.dump, runs_configs, indent=1, sort_keys=True)
      write_atomically(os.path.join(out, CONFIGS), dump)
      keep_metrics(workdir, os.path.join(out, "metrics", f"{slug}_seed{seed}.jsonl"))
      shutil.rmtree(workdir, ignore_errors=True)  # its row and metrics are saved
  if args.resume:
    curves, rows, _ = with_runs_on_disk(out, curves, rows, runs_configs)
  return curves, rows


# Beside final.csv: each run's config, so that --resume can tell a row of an older config.
CONFIGS = "configs.json"
# Keys that do not change what a run computes: --resume does not compare them.
NOT_COMPARED = ("checkpoint.", "human.")


def run_key(condition: str, seed: int) -> str:
  return f"{condition}, seed {seed}"


def flat_config(config) -> dict:
  """The config's leaves by dotted key, as JSON gives them back (tuples as lists), without
  the seed (the run's row has it)."""

  def leaves(node, prefix):
    for key, value in node.items():
      if isinstance(value, dict):
        yield from leaves(value, f"{prefix}{key}.")
      elif f"{prefix}{key}" != "seed":
        yield f"{prefix}{key}", value

  return json.loads(json.dumps(dict(leaves(config.to_dict(), ""))))


def read_configs(out: str) -> dict:
  path = os.path.join(out, CONFIGS)
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def check_configs(out: str, rows: list[dict], runs_configs: dict, configs: dict, log) -> None:
  """Refuses to resume beside rows whose stored config differs from the condition's config
  now on a key both have (a key only one has is a setting added or removed since, taken
  to keep the old behaviour). Rows recorded before configs were stored are kept, said."""
  changed, unknown = [], 0
  for row in rows:
    stored = runs_configs.get(run_key(row["condition"], row["seed"]))
    if row["condition"] not in configs:
      continue  # a condition this call does not run: its rows are only carried along
    if stored is None:
      unknown += 1
      continue
    now = flat_config(configs[row["condition"]])
    shared = {k for k in stored.keys() & now.keys() if not k.startswith(NOT_COMPARED)}
    keys = sorted(k for k in shared if stored[k] != now[k])
    if keys:
      what = ", ".join(f"{k}={stored[k]!r} there, {now[k]!r} now" for k in keys[:4])
      more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
      changed.append(f"  {run_key(row['condition'], row['seed'])}: {what}{more}")
  if changed:
    raise ValueError(
      f"{out}: --resume would mix runs of different configs; these rows ran with another "
      "config than their condition has now:\n"
      + "\n".join(changed)
      + f"\nMove {out} aside (or delete those rows from its final.csv) to rerun them."
    )
  if unknown:
    log(f"{out}: {unknown} rows predate {CONFIGS}: kept, assumed to be of today's configs")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument(
    "--envs",
    default="reacher",
    help="comma-separated; each uses configs/<env>.py and <env>_pref.py; 'all' is the "
    f"paper's eight: {','.join(PAPER_TASKS)}",
  )
  parser.add_argument(
    "--learner",
    choices=("ppo", "sac"),
    default="ppo",
    help="sac: SAC on the true reward against PEBBLE, from configs/<env>_sac.py and "
    "<env>_sac_pref.py (with --envs=all, the envs that have them)",
  )
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument(
    "--labels", default="350,700,1400", help="oracle label budgets (empty: true reward only)"
  )
  parser.add_argument(
    "--teachers", default="", help="noisy B-Pref teachers, e.g. stochastic,mistake,myopic"
  )
  parser.add_argument("--teacher_labels", type=int, default=700, help="their label budget")
  parser.add_argument(
    "--true_reward",
    action=argparse.BooleanOptionalAction,
    default=True,
    help="run the true-reward condition (--no-true_reward: only the label budgets, e.g. "
    "while another process runs it with --resume into the same --out)",
  )
  parser.add_argument("--total_env_steps", type=int, default=None, help="override the budget")
  parser.add_argument(
    "--set",
    action="append",
    metavar="KEY=VALUE",
    help="change a key of the preference configs (not the true-reward one); repeatable",
  )
  parser.add_argument(
    "--set_all",
    action="append",
    metavar="KEY=VALUE",
    help="change a key of every config, the true-reward one too (before --set); repeatable",
  )
  parser.add_argument("--out", default="runs/label_efficiency")
  parser.add_argument(
    "--workdirs",
    default="runs/label_efficiency_work",
    help="each unfinished run's checkpoints, so that --resume continues it mid-run",
  )
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
  envs = list(PAPER_TASKS) if args.envs == "all" else args.envs.split(",")
  tasks = [task_name(env, args.learner) for env in envs]
  if args.envs == "all":
    tasks = [t for t in tasks if all(os.path.exists(p) for p in config_paths(t))]
  log = functools.partial(print, file=sys.stderr, flush=True)
  log(f"devices: {jax.devices()}")
  results = {}
  for task in tasks:
    if not args.summarize:
      results[task] = run_env(task, args, log)
    elif os.path.exists(os.path.join(args.out, task, "final.csv")):
      results[task] = read_runs(args.out, task)
    else:
      log(f"{task}: no runs in {os.path.join(args.out, task)} yet")
  # The paper table and figure cover every task with runs in --out, not only this call's.
  others = {}
  for env in PAPER_TASKS:
    task = task_name(env, args.learner)
    if task not in results and os.path.exists(os.path.join(args.out, task, "final.csv")):
      others[task] = read_runs(args.out, task)
  suffix = "" if args.learner == "ppo" else f"_{args.learner}"
  summaries = report(results, args.out, suffix, others)
  if args.learner != "ppo":
    compare_learners(args.out, envs, args.learner)
  return summaries


def read_runs(out: str, task: str) -> tuple[list[dict], list[dict]]:
  """(curves, final rows) of a task's runs in `out`."""
  return read_csv(os.path.join(out, task), "curves.csv"), read_csv(
    os.path.join(out, task), "final.csv"
  )


def report(results: dict, out: str, suffix: str = "", others: dict | None = None) -> dict:
  """Prints each task's table and writes its plot; then, over those and the `others`
  (tasks with earlier runs in `out`, in task order), prints the paper table and writes
  paper_table<suffix>.csv and paper_figure<suffix>.png, over every run in the CSVs
  (whatever --labels and --teachers this call had). Returns {task: summaries}."""
  has_true = lambda rows: any(r["condition"] == "true reward" for r in rows)  # noqa: E731
  summaries = {}
  for env, (curves, rows) in results.items():
    plot(curves, os.path.join(out, env, "label_efficiency.png"), env)
    if not has_true(rows):  # another process runs it
      print(f"{env}: no true-reward run yet, so no ratios; its table waits for one\n")
      continue
    summaries[env] = summarize(rows)
    initial = statistics.fmean(r["initial_return"] for r in rows if r["condition"] == "true reward")
    print(format_table(env, summaries[env], initial) + "\n", flush=True)
  every = {**results, **(others or {})}
  every = {t: every[t] for t in sorted(every, key=task_order) if has_true(every[t][1])}
  if results and every:
    table_summaries = {t: summaries.get(t) or summarize(rows) for t, (_, rows) in every.items()}
    conditions = {r["condition"] for _, rows in every.values() for r in rows}
    budgets = sorted(int(c.split()[0]) for c in conditions if re.fullmatch(r"\d+ labels", c))
    table = paper_rows(table_summaries, budgets)
    write_csv(os.path.join(out, f"paper_table{suffix}.csv"), table)
    panels = {env: curves for env, (curves, _) in every.items()}
    plot_panels(panels, budgets, os.path.join(out, f"paper_figure{suffix}.png"))
    print(format_paper_table(table, budgets), flush=True)
  return summaries


def paper_rows(summaries: dict, budgets: list[int]) -> list[dict]:
  """One row per env (the true-reward return, each oracle budget's return and ratio),
  then one per env and noisy teacher ("hopper, mistake"), in its budget's column."""
  rows, teacher_rows = [], []
  for env, group in summaries.items():
    by_condition = {s["condition"]: s for s in group}
    true = by_condition.pop("true reward")
    oracle = {int(c.split()[0]): s for c, s in by_condition.items() if ", " not in c}
    rows.append(table_row(env, true, oracle, budgets))
    for condition, s in by_condition.items():
      if ", " in condition:  # "700 labels, mistake"
        labels, teacher = condition.split(", ")
        teacher_rows.append(
          table_row(f"{env}, {teacher}", true, {int(labels.split()[0]): s}, budgets)
        )
  return rows + teacher_rows


def table_row(name: str, true: dict, labelled: dict, budgets: list[int]) -> dict:
  """A row of paper_table.csv: `true`'s return, and each budget's summary in `labelled`
  ({budget: summary}) where it has one."""
  row = {"env": name, "seeds": true["seeds"], "true_return": true["return"]}
  for n in budgets:
    s = labelled.get(n)
    row[f"return_{n}"] = s["return"] if s else None
    row[f"ratio_{n}"] = s["ratio"] if s else None
    row[f"seeds_{n}"] = s["seeds"] if s else 0
  row["true_steps_per_second"] = true["steps_per_second"]
  rates = [s["steps_per_second"] for s in labelled.values()]
  row["pref_steps_per_second"] = statistics.fmean(rates) if rates else None
  return row


def format_paper_table(rows: list[dict], budgets: list[int]) -> str:
  header = f"{'env':<26}{'true':>9}" + "".join(f"{f'{n} labels':>22}" for n in budgets)
  header += f"{'sps true':>10}{'sps pref':>10}"
  lines = [header, "-" * len(header)]
  for row in rows:
    line = f"{row['env']:<26}{row['true_return']:>9.1f}"
    for n in budgets:
      if row[f"return_{n}"] is None:
        line += f"{'-':>22}"
      else:
        cell = f"{row[f'return_{n}']:.1f} ({row[f'ratio_{n}']:.2f}, {row[f'seeds_{n}']} s)"
        line += f"{cell:>22}"
    pref = row["pref_steps_per_second"]
    line += f"{row['true_steps_per_second']:>10,.0f}" + (f"{pref:>10,.0f}" if pref else "")
    lines.append(line)
  lines.append("cells: mean final return (ratio to the true-reward run, seeds)")
  return "\n".join(lines)


def plot_panels(curves: dict, budgets: list[int], path: str) -> None:
  """`path` in the layout of the paper's Figure 1: a panel per task, true return
  against env steps; the true-reward run dashed, one curve per label budget; lines are
  means over seeds, shades span the seeds' lowest to highest."""
  from matplotlib.figure import Figure  # noqa: PLC0415

  columns = min(4, len(curves))
  rows = -(-len(curves) // columns)
  fig = Figure(figsize=(4 * columns, 3.2 * rows))
  axes = fig.subplots(rows, columns, squeeze=False).ravel()
  for ax, (env, env_curves) in zip(axes, curves.items(), strict=False):
    for index, condition in enumerate(["true reward"] + [f"{n} labels" for n in budgets]):
      points = returns_by_step(env_curves, condition)
      if not points:
        continue
      steps = sorted(points)
      mean = [statistics.fmean(points[s]) for s in steps]
      if condition == "true reward":
        ax.plot(steps, mean, "--", color="black", label="RL on the true reward")
        continue
      ax.plot(steps, mean, color=f"C{index - 1}", label=condition)
      low, high = [min(points[s]) for s in steps], [max(points[s]) for s in steps]
      ax.fill_between(steps, low, high, color=f"C{index - 1}", alpha=0.2, linewidth=0)
    ax.set_title(env)
    ax.set_xlabel("env steps")
    ax.grid(alpha=0.3)
  for ax in axes[len(curves) :]:
    ax.set_visible(False)
  axes[0].set_ylabel("true return")
  axes[0].legend(loc="best", fontsize="small")
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def mean_curve(curves: list[dict], condition: str) -> list[tuple[int, float]]:
  """(env steps, mean true return over seeds) of one condition, in step order."""
  points = returns_by_step(curves, condition)
  return [(step, statistics.fmean(points[step])) for step in sorted(points)]


def steps_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
  """The first env step count at which a mean curve reaches `target` (None: never)."""
  return next((step for step, value in curve if value >= target), None)


def learner_rows(ppo_curves: list[dict], other_curves: list[dict]) -> list[dict]:
  """Per label budget both learners ran: the env steps each one's mean preference curve
  took to reach the same return, 0.9 x the lower of their final mean returns (so both
  reach it)."""
  rows = []
  conditions = {c["condition"] for c in ppo_curves} & {c["condition"] for c in other_curves}
  for condition in sorted(c for c in conditions if re.fullmatch(r"\d+ labels", c)):
    ppo, other = mean_curve(ppo_curves, condition), mean_curve(other_curves, condition)
    target = 0.9 * min(ppo[-1][1], other[-1][1])
    ppo_steps, other_steps = steps_to_reach(ppo, target), steps_to_reach(other, target)
    rows.append(
      {
        "condition": condition,
        "target_return": target,
        "ppo_env_steps": ppo_steps,
        "other_env_steps": other_steps,
        "fewer_steps": ppo_steps / other_steps if ppo_steps and other_steps else None,
      }
    )
  return rows


def compare_learners(out: str, envs: list[str], learner: str) -> None:
  """Prints and writes learners_<learner>.csv: for each env whose PPO and `learner`
  tasks both have curves in `out`, `learner_rows`."""
  table = []
  for env in envs:
    paths = [os.path.join(out, t, "curves.csv") for t in (env, task_name(env, learner))]
    if not all(os.path.exists(p) for p in paths):
      continue
    ppo, other = (read_csv(os.path.dirname(p), "curves.csv") for p in paths)
    table += [{"env": env, **row} for row in learner_rows(ppo, other)]
  if not table:
    return
  write_csv(os.path.join(out, f"learners_{learner}.csv"), table)
  lines = [
    f"env steps to reach the same return from labels: PPO against {learner.upper()}",
    f"{'env':<14}{'condition':<14}{'target':>9}{'PPO steps':>13}{'steps':>13}{'fewer':>8}",
  ]
  for row in table:
    cells = [row["ppo_env_steps"], row["other_env_steps"]]
    steps = "".join(f"{c:>13,}" if c else f"{'-':>13}" for c in cells)
    fewer = f"{row['fewer_steps']:>7.1f}x" if row["fewer_steps"] else f"{'-':>8}"
    lines.append(
      f"{row['env']:<14}{row['condition']:<14}{row['target_return']:>9.1f}{steps}{fewer}"
    )
  print("\n".join(lines), flush=True)


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
