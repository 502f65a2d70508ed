"""Reward-model over-optimization (Gao, Schulman & Hilton 2022, arXiv 2210.10760) on the
default LM task: proxy reward models of several sizes and comparison counts, the gold
reward playing the human, best-of-n and PPO against each proxy.

  python experiments/overoptimization.py --out=runs/overoptimization \
      --layers=1,2,4 --counts=500,1000,2000

  base        the pipeline's sft and comparisons stages (configs/lm_rlhf.py) in <out>/base:
              the SFT policy, and max(counts) pairs of its samples labelled by the oracle
              teacher on their gold rewards
  proxies     for each (layers L, count C): <out>/proxy_L<L>_C<C>, the pipeline's rm stage
              on the first C comparisons (10% of them held out; --rm_epochs passes over
              the rest) with the trunk the SFT model's first L blocks (`rm.layers`): a
              smaller proxy has fewer blocks
  best-of-n   --samples completions of each of the first --prompts held-out prompts, drawn
              once from the SFT policy, scored by gold and by every proxy; for each n, the
              expected gold and proxy of the proxy's best of n drawn without replacement
              (`best_of_n_expectation`, exact over the sample) at KL = log n - (n - 1)/n
  RL          the pipeline's ppo stage against each proxy with a fixed, small KL
              coefficient (--beta), evaluated every --eval_every steps: gold, proxy, KL
  fits        with d = sqrt(KL) and gold measured from the SFT policy's,
                best-of-n  gold(d) = d (alpha - beta d)
                RL         gold(d) = d (alpha - beta log d)
              by least squares (`fit_gold`)

Every part is skipped when its output is there: rerun the same command to go on. Writes
<out>/overoptimization.csv (method, layers, count, n or step, kl, d, gold, proxy: gold
and proxy as changes from the SFT policy's), <out>/fits.csv and <out>/overoptimization.png
(a column per comparison count, best-of-n above RL; gold solid, proxy dashed, a colour
per proxy size), and prints the fits.
"""

import argparse
import csv
import math
import os
import sys

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rlhf_jax.lm import best_of_n, data, pipeline, rm  # noqa: E402
from rlhf_jax.lm.config import pipeline_config  # noqa: E402

# --- the estimates ----------------------------------------------------------------------


def best_of_n_expectation(scores, values, n: int) -> float:
  """Mean over prompts of E[value of the highest-scoring of n samples drawn without
  replacement from the S samples of each prompt]: scores and values [S, P]. Sorted by
  score, the i-th lowest of S (1-based) is the best of a random n-subset with probability
  C(i-1, n-1) / C(S, n)."""
  scores, values = np.asarray(scores, np.float64), np.asarray(values, np.float64)
  size = scores.shape[0]
  if not 1 <= n <= size:
    raise ValueError(f"n={n}: best-of-n from {size} samples needs 1 <= n <= {size}.")
  order = np.argsort(scores, axis=0, kind="stable")
  ranked = np.take_along_axis(values, order, axis=0)  # [S, P], ascending score
  log_choose = lambda a, b: math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)
  weights = np.array(
    [
      math.exp(log_choose(i - 1, n - 1) - log_choose(size, n)) if i >= n else 0.0
      for i in range(1, size + 1)
    ]
  )
  return float(np.mean(weights @ ranked))


def pair_accuracy(scores, gold) -> float:
  """How often the proxy orders two samples of the same prompt as gold does: over every
  pair of the S samples [S, P] of each prompt whose golds differ, then over prompts."""
  scores, gold = np.asarray(scores, np.float64), np.asarray(gold, np.float64)
  accuracies = []
  for prompt in range(scores.shape[1]):
    gold_order = np.sign(gold[:, None, prompt] - gold[None, :, prompt])
    agree = np.sign(scores[:, None, prompt] - scores[None, :, prompt]) == gold_order
    pairs = np.triu(gold_order != 0, k=1)
    if pairs.any():
      accuracies.append(np.mean(agree[pairs]))
  return float(np.mean(accuracies)) if accuracies else float("nan")  # all golds equal


def fit_gold(method: str, d, gold) -> tuple[float, float]:
  """(alpha, beta) of Gao et al.'s form for `method` ("best_of_n" or "rl") fit to gold
  (measured from the initial policy's) at d = sqrt(KL), by least squares."""
  d, gold = np.asarray(d, np.float64), np.asarray(gold, np.float64)
  if method == "best_of_n":
    second = -d * d
  elif method == "rl":
    second = -np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)
  else:
    raise ValueError(f"method={method!r}: best_of_n or rl.")
  (alpha, beta), *_ = np.linalg.lstsq(np.stack([d, second], axis=1), gold, rcond=None)
  return float(alpha), float(beta)


# --- the runs ---------------------------------------------------------------------------


def base_config(seed: int, counts) -> "pipeline_config":
  config = pipeline_config()
  config.seed = seed
  config.stages = "sft,comparisons"
  config.comparisons.num_pairs = max(counts)
  return config


def proxy_config(args, base: str, layers: int, count: int):
  config = pipeline_config()
  config.seed = args.seed
  config.stages = "rm"
  config.model.checkpoint = os.path.join(base, "sft", "model")
  config.data.comparisons_path = os.path.join(args.out, f"comparisons_{count}.jsonl")
  config.rm.layers = layers
  # The same passes over the data for every count (Gao et al.: one epoch each), not the
  # same steps: the pipeline's 200 steps of 32 are 3.6 passes over 1,800 comparisons.
  train = count - max(1, round(config.rm.held_out_fraction * count))
  config.rm.steps = max(1, round(args.rm_epochs * train / config.rm.batch_size))
  config.ppo.kl.controller = "fixed"
  config.ppo.kl.init_beta = args.beta
  config.ppo.steps = args.ppo_steps
  config.ppo.eval_every = args.eval_every
  return config


def write_subset(base: str, path: str, count: int) -> None:
  """The first `count` comparisons of the base run's."""
  if os.path.exists(path):
    return
  rows = data.read_jsonl(os.path.join(base, "comparisons.jsonl"))
  if len(rows) < count:
    raise SystemExit(f"{base}/comparisons.jsonl has {len(rows)} comparisons, fewer than {count}.")
  data.write_jsonl(path + ".tmp", [row for _, row in rows[:count]])
  os.replace(path + ".tmp", path)


def loaded_run(config, workdir: str) -> pipeline.Run:
  """A pipeline Run with the SFT model and (when fit) the reward model loaded."""
  run = pipeline.Run(config, workdir, open(os.devnull, "w"))
  run.stages = config.stages.split(",")
  pipeline.load_sft(run)
  run.rm_params = pipeline.load_rm(run)
  return run


def sft_samples(run: pipeline.Run, path: str, num_prompts: int, num_samples: int, seed: int):
  """{tokens [S, P, N], mask, prompt_tokens [P, Tp], prompt_mask, gold [S, P]}: S samples
  of the SFT policy for each of the first P eval prompts (saved to `path`)."""
  if os.path.exists(path):
    return dict(np.load(path))
  prompts = run.eval_prompts[:num_prompts]
  prompt_tokens, prompt_mask = data.prompt_arrays(
    run.tokenizer, prompts, run.prompt_length(run.eval_prompts)
  )
  # Each call samples `copies` completions of every prompt (a batch of about 256 rows).
  copies = math.gcd(num_samples, max(1, 256 // num_prompts))
  tiled = [np.tile(x, (copies, 1)) for x in (prompt_tokens, prompt_mask)]
  sample, key = run.sampler(), jax.random.key(seed)
  tokens, masks, golds = [], [], []
  for index in range(num_samples // copies):
    completion = sample(run.sft_params, jax.random.fold_in(key, index), *tiled)
    tokens.append(np.asarray(completion.tokens).reshape(copies, num_prompts, -1))
    masks.append(np.asarray(completion.mask).reshape(copies, num_prompts, -1))
    for row_tokens, row_mask in zip(tokens[-1], masks[-1], strict=True):
      texts = data.decode_completions(run.tokenizer, row_tokens, row_mask)
      golds.append([run.gold_fn(p, y) for p, y in zip(prompts, texts, strict=True)])
    print(f"  SFT samples: {len(golds)} of {num_samples} per prompt", flush=True)
  samples = dict(
    tokens=np.concatenate(tokens),
    mask=np.concatenate(masks),
    prompt_tokens=np.asarray(prompt_tokens),
    prompt_mask=np.asarray(prompt_mask),
    gold=np.array(golds, np.float64),
  )
  np.savez(path + ".tmp.npz", **samples)
  os.replace(path + ".tmp.npz", path)
  return samples


def proxy_scores(run: pipeline.Run, samples: dict, path: str):
  """The proxy's (normalized) scores [S, P] of the samples (saved to `path`)."""
  if os.path.exists(path):
    return np.load(path)
  score = jax.jit(rm.make_score_fn(run.rm_model))
  prompts, prompt_mask = samples["prompt_tokens"], samples["prompt_mask"]
  scores = np.stack(
    [
      np.asarray(score(run.rm_params, prompts, prompt_mask, tokens, mask))
      for tokens, mask in zip(samples["tokens"], samples["mask"], strict=True)
    ]
  )
  np.save(path + ".tmp.npy", scores)
  os.replace(path + ".tmp.npy", path)
  return scores


def held_out_accuracy(workdir: str) -> float:
  rows = [row for _, row in data.read_jsonl(os.path.join(workdir, "metrics.jsonl"))]
  return [row for row in rows if row.get("stage") == "rm"][-1]["held_out_rm_accuracy"]


def curve(rows: list[dict], method: str, layers: int, count: int) -> list[dict]:
  return [r for r in rows if (r["method"], r["layers"], r["count"]) == (method, layers, count)]


def powers_of_two(limit: int) -> list[int]:
  return [2**k for k in range(int(math.log2(limit)) + 1)]


def best_of_n_rows(gold, scores, layers: int, count: int) -> list[dict]:
  """Best-of-n for n = 1, 2, 4, ... up to the samples per prompt, from samples' gold and
  proxy scores [S, P]; both as changes from the SFT policy's mean (n = 1)."""
  rows = []
  for n in powers_of_two(scores.shape[0]):
    kl = best_of_n.best_of_n_kl(n)
    rows.append(
      dict(
        method="best_of_n",
        layers=layers,
        count=count,
        n_or_step=n,
        kl=kl,
        d=math.sqrt(kl),
        gold=best_of_n_expectation(scores, gold, n) - float(np.mean(gold)),
        proxy=best_of_n_expectation(scores, scores, n) - float(np.mean(scores)),
      )
    )
  return rows


def rl_rows(results: list[dict], layers: int, count: int) -> list[dict]:
  """The SFT evaluation and PPO's, in step order, as changes from the SFT policy's."""
  sft = [r for r in results if r["method"] == "sft"][-1]
  evaluations = sorted(
    (r for r in results if r["method"] in ("sft", "ppo")), key=lambda r: r["step"]
  )
  return [
    dict(
      method="rl",
      layers=layers,
      count=count,
      n_or_step=r["step"],
      kl=max(r["kl"], 0.0),
      d=math.sqrt(max(r["kl"], 0.0)),
      gold=r["gold"] - sft["gold"],
      proxy=r["proxy"] - sft["proxy"],
    )
    for r in evaluations
  ]


def fit_table(rows: list[dict], accuracy: dict, proxies) -> list[dict]:
  """Per method and proxy with at least 3 points: the fit, the peak and the last point.
  `accuracy[(layers, count)]`: (held-out accuracy, pair accuracy on the SFT samples)."""
  fits = []
  for method in ("best_of_n", "rl"):
    for size, count in proxies:
      points = curve(rows, method, size, count)
      if len(points) < 3:
        continue
      alpha, beta = fit_gold(method, [r["d"] for r in points], [r["gold"] for r in points])
      peak = max(points, key=lambda r: r["gold"])
      fits.append(
        dict(
          method=method,
          layers=size,
          count=count,
          held_out_accuracy=accuracy[size, count][0],
          sample_pair_accuracy=accuracy[size, count][1],
          alpha=alpha,
          beta=beta,
          peak_gold=peak["gold"],
          peak_d=peak["d"],
          last_gold=points[-1]["gold"],
          last_proxy=points[-1]["proxy"],
          last_d=points[-1]["d"],
        )
      )
  return fits


# --- output -----------------------------------------------------------------------------


def draw(rows: list[dict], path: str, counts, layers) -> None:
  figure, axes = plt.subplots(
    2, len(counts), figsize=(4.2 * len(counts), 7), squeeze=False, sharex="row"
  )
  colours = dict(zip(layers, plt.cm.viridis(np.linspace(0.1, 0.85, len(layers))), strict=True))
  for column, count in enumerate(counts):
    for row_index, method in enumerate(("best_of_n", "rl")):
      axis = axes[row_index][column]
      for size in layers:
        points = [
          r for r in rows if (r["method"], r["layers"], r["count"]) == (method, size, count)
        ]
        if not points:
          continue
        d = [r["d"] for r in points]
        label = f"{size} block{'s' * (size > 1)}"
        axis.plot(d, [r["gold"] for r in points], "-o", ms=3, color=colours[size], label=label)
        axis.plot(d, [r["proxy"] for r in points], "--", color=colours[size])
      axis.axhline(0.0, color="grey", lw=0.5)
      axis.set_title(f"{'best-of-n' if method == 'best_of_n' else 'RL (PPO)'}, {count} comparisons")
      axis.set_xlabel("d = sqrt(KL(π ‖ π_SFT))")
      if column == 0:
        axis.set_ylabel("change from SFT (gold solid, proxy dashed)")
      if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=110)
  plt.close(figure)


def write_csv(path: str, rows: list[dict]) -> None:
  with open(path + ".tmp", "w", newline="", encoding="utf-8") as file:
    writer = csv.DictWriter(file, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  os.replace(path + ".tmp", path)


# --- main -------------------------------------------------------------------------------


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default="runs/overoptimization")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--layers", default="1,2,4", help="proxy sizes: SFT blocks kept")
  parser.add_argument("--counts", default="500,1000,2000", help="comparisons per proxy")
  parser.add_argument("--prompts", type=int, default=64, help="held-out prompts for best-of-n")
  parser.add_argument("--samples", type=int, default=256, help="SFT samples per prompt")
  parser.add_argument("--rm_epochs", type=float, default=3.6, help="passes over the comparisons")
  parser.add_argument("--beta", type=float, default=0.01, help="PPO's fixed KL coefficient")
  parser.add_argument("--ppo_steps", type=int, default=100)
  parser.add_argument("--eval_every", type=int, default=10)
  parser.add_argument("--rl", default="all", help="'all', 'none', or proxies as L:C,L:C")
  args = parser.parse_args(argv)
  layers = [int(x) for x in args.layers.split(",")]
  counts = [int(x) for x in args.counts.split(",")]
  proxies = [(size, count) for count in counts for size in layers]
  if args.rl == "all":
    rl = proxies
  elif args.rl == "none":
    rl = []
  else:
    rl = [tuple(int(x) for x in item.split(":")) for item in args.rl.split(",")]
  if set(rl) - set(proxies):
    raise SystemExit(f"--rl={args.rl}: {sorted(set(rl) - set(proxies))} are not among the proxies.")
  os.makedirs(args.out, exist_ok=True)

  base = os.path.join(args.out, "base")
  print(f"base: SFT and {max(counts)} comparisons in {base}", flush=True)
  pipeline.run_pipeline(base_config(args.seed, counts), base)
  rows, accuracy, samples = [], {}, None

  def save() -> list[dict]:
    fits = fit_table(rows, accuracy, proxies)
    write_csv(os.path.join(args.out, "overoptimization.csv"), rows)
    if fits:
      write_csv(os.path.join(args.out, "fits.csv"), fits)
    draw(rows, os.path.join(args.out, "overoptimization.png"), counts, layers)
    return fits

  # Every proxy and its best-of-n first (minutes each), then RL against them (longer).
  for size, count in proxies:
    write_subset(base, os.path.join(args.out, f"comparisons_{count}.jsonl"), count)
    workdir = os.path.join(args.out, f"proxy_L{size}_C{count}")
    config = proxy_config(args, base, size, count)
    print(f"proxy: {size} blocks, {count} comparisons ({workdir})", flush=True)
    pipeline.run_pipeline(config, workdir, stream=open(os.devnull, "w"))
    run = loaded_run(config, workdir)
    if samples is None:
      samples = sft_samples(
        run, os.path.join(args.out, "sft_samples.npz"), args.prompts, args.samples, args.seed
      )
    scores = proxy_scores(run, samples, os.path.join(workdir, "best_of_n_scores.npy"))
    accuracy[size, count] = (held_out_accuracy(workdir), pair_accuracy(scores, samples["gold"]))
    rows.extend(best_of_n_rows(samples["gold"], scores, size, count))
    save()
  for size, count in rl:
    config = proxy_config(args, base, size, count)
    config.stages = "rm,ppo"
    print(f"PPO against {size} blocks, {count} comparisons: beta {args.beta}", flush=True)
    results = pipeline.run_pipeline(config, os.path.join(args.out, f"proxy_L{size}_C{count}"))
    rows.extend(rl_rows(results, size, count))
    save()

  print(
    f"\n{'method':10s} {'blocks':>6s} {'pairs':>6s} {'RM acc':>6s} {'vs gold':>7s} {'alpha':>8s}"
    f" {'beta':>8s}"
    f" {'peak gold (d)':>15s} {'last gold / proxy (d)':>24s}"
  )
  for f in save():
    print(
      f"{f['method']:10s} {f['layers']:6d} {f['count']:6d} {f['held_out_accuracy']:6.3f} "
      f"{f['sample_pair_accuracy']:7.3f} "
      f"{f['alpha']:8.4f} {f['beta']:8.4f} {f['peak_gold']:+8.3f} ({f['peak_d']:4.2f}) "
      f"{f['last_gold']:+8.3f} / {f['last_proxy']:+6.3f} ({f['last_d']:4.2f})"
    )
  print(
    "gold and proxy: changes from the SFT policy's; d = sqrt(KL) in sqrt(nats); RM acc: on its"
    " held-out comparisons; vs gold: how often it orders two SFT samples of a prompt as gold does"
  )


if __name__ == "__main__":
  sys.exit(main())
