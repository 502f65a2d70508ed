"""Gold reward against KL to the SFT model, for every method of one or more pipeline runs.

  python experiments/lm_gold_vs_kl.py runs/lm_rlhf_seed0 runs/lm_rlhf_seed1 runs/lm_rlhf_seed2 \
      --out=docs/lm

Reads each workdir's results.jsonl (`rlhf_jax/lm/pipeline.py`) and writes to --out:
  gold_vs_kl.csv   method, step, and per seed (workdir) the kl, gold and proxy of every
                   evaluation, plus their means over the seeds that have it
  gold_vs_kl.png   gold reward (mean over seeds, a band of ± one std) against KL in nats:
                   PPO's, online PPO's and DPO's evaluations as curves in step order,
                   best-of-n as a curve over n, the SFT model as the point at KL 0
and prints a table of each method's last evaluation: mean ± std gold, KL and proxy.
DPO also appears as dpo_held_out: each seed's evaluation at the step of lowest held-out
DPO loss (the pipeline logs it), the step picked without looking at gold.
"""

import argparse
import csv
import json
import os
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rlhf_jax.lm.pipeline import read_results  # noqa: E402


def family(method: str) -> str:
  return "best-of-n" if method.startswith("best_of_") else method


def order(row: dict) -> tuple:
  n = int(row["method"].rsplit("_", 1)[1]) if row["method"].startswith("best_of_") else 0
  return (family(row["method"]), row["step"], n)


def held_out_pick(workdir: str, rows: list[dict]) -> dict | None:
  """DPO's evaluation at the step of lowest held-out DPO loss (metrics.jsonl), as the
  method "dpo_held_out" at step 0 with that step as `chosen_step`: a step chosen
  without looking at gold. None when the run logged no held-out loss."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as file:
    metrics = [json.loads(line) for line in file if line.strip()]
  losses = {
    m["step"]: m["held_out_dpo_loss"]
    for m in metrics
    if m.get("stage") == "dpo" and "held_out_dpo_loss" in m
  }
  evaluated = {row["step"]: row for row in rows if row["method"] == "dpo"}
  steps = [step for step in losses if step in evaluated]
  if not steps:
    return None
  step = min(steps, key=lambda s: (losses[s], s))
  return {**evaluated[step], "method": "dpo_held_out", "step": 0, "chosen_step": step}


def collect(workdirs: list[str]) -> dict:
  """{(method, step): [row of each workdir that has it]}, in plotting order; DPO's
  held-out pick (`held_out_pick`) as the method dpo_held_out."""
  points = {}
  for workdir in workdirs:
    rows = read_results(os.path.join(workdir, "results.jsonl"))
    if not rows:
      raise SystemExit(f"{workdir} has no results.jsonl rows yet.")
    pick = held_out_pick(workdir, rows)
    for row in rows + ([pick] if pick else []):
      points.setdefault((row["method"], row["step"]), []).append(row)
  return dict(sorted(points.items(), key=lambda item: order(item[1][0])))


def mean_std(values: list[float]) -> tuple[float, float]:
  return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def write_csv(points: dict, path: str) -> None:
  with open(path, "w", newline="", encoding="utf-8") as file:
    writer = csv.writer(file)
    writer.writerow(["method", "step", "seeds", "kl", "gold", "gold_std", "proxy"])
    for (method, step), rows in points.items():
      kl = mean_std([r["kl"] for r in rows])[0]
      gold, gold_std = mean_std([r["gold"] for r in rows])
      proxies = [r["proxy"] for r in rows if "proxy" in r]
      proxy = statistics.fmean(proxies) if proxies else ""
      writer.writerow([method, step, len(rows), kl, gold, gold_std, proxy])


def plot(points: dict, path: str, title: str) -> None:
  figure, axes = plt.subplots(figsize=(6.4, 4.4))
  sft = points.get(("sft", 0))
  curves = {}  # family -> [rows of each point]; PPO and DPO start at the SFT model
  for (method, _), rows in points.items():
    start = [sft] if sft and family(method) in ("ppo", "online", "dpo") else []
    curves.setdefault(family(method), start).append(rows)
  for name, groups in curves.items():
    kls = [mean_std([r["kl"] for r in rows])[0] for rows in groups]
    golds = [mean_std([r["gold"] for r in rows]) for rows in groups]
    is_sft = name == "sft"
    line = axes.plot(
      kls,
      [m for m, _ in golds],
      marker="*" if is_sft else "o",
      markersize=10 if is_sft else 4,
      label=name,
    )
    low, high = [m - s for m, s in golds], [m + s for m, s in golds]
    axes.fill_between(kls, low, high, alpha=0.15, color=line[0].get_color())
  axes.set_xlabel("KL(policy ‖ SFT), nats per completion")
  axes.set_ylabel("gold reward (held-out prompts)")
  axes.set_title(title)
  axes.grid(alpha=0.3)
  axes.legend()
  figure.tight_layout()
  figure.savefig(path, dpi=120)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdirs", nargs="+", help="pipeline workdirs, one per seed")
  parser.add_argument("--out", default="runs/lm_gold_vs_kl")
  parser.add_argument("--title", default="Default task, cpu GPT: gold reward against KL")
  args = parser.parse_args()
  points = collect(args.workdirs)
  os.makedirs(args.out, exist_ok=True)
  write_csv(points, os.path.join(args.out, "gold_vs_kl.csv"))
  plot(points, os.path.join(args.out, "gold_vs_kl.png"), args.title)
  last = {}
  for (method, _), rows in points.items():
    last[method] = rows
  print(f"{'method':12s} {'seeds':>5s} {'gold':>16s} {'kl':>7s} {'proxy':>7s}")
  for method, rows in last.items():
    gold, std = mean_std([r["gold"] for r in rows])
    kl = mean_std([r["kl"] for r in rows])[0]
    proxies = [r["proxy"] for r in rows if "proxy" in r]
    proxy = f"{statistics.fmean(proxies):+7.3f}" if proxies else "      -"
    steps = [r["chosen_step"] for r in rows if "chosen_step" in r]
    chosen = f"  (steps {', '.join(map(str, steps))})" if steps else ""
    print(f"{method:12s} {len(rows):5d} {gold:+8.3f} ± {std:5.3f} {kl:7.2f} {proxy}{chosen}")


if __name__ == "__main__":
  main()
