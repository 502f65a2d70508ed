"""Our token-PPO step against trl's PPO step (PyTorch, CPU): tokens/s of generation and of
training, side by side, in one run.

  taskset -c 0 python experiments/benchmark_lm.py
  taskset -c 0 python experiments/benchmark_lm.py --trl_python=/work/trl_venv/bin/python \
      --width=128 --layers=4 --heads=4 --vocab=259 --batch=16 --prompt_length=32 \
      --new_tokens=32 --ppo_epochs=4 --num_minibatches=4 --warmup=1 --repeats=5

trl's side runs in another interpreter (torch, transformers and trl must not enter this
repo's venv); experiments/benchmark_lm_trl.py is that side, and its docstring says what it
builds and times. Make that interpreter once:

  python3 -m venv /work/trl_venv
  /work/trl_venv/bin/pip install torch==2.13.0+cpu trl==1.12.0 transformers

trl==1.12.0 is the newest release with a PPO trainer (`trl.experimental.ppo`; 1.13
removed it). Both sides get the same GPT-2 configuration with random weights, the same
prompts (drawn from [0, vocab - 1), see below), completion length, batch, sampling at
temperature 1 with no top-k or top-p, ppo_epochs x num_minibatches optimizer steps on
minibatches of whole sequences, float32, and one thread: XLA_FLAGS (set below, before
JAX starts) and torch.set_num_threads(1); run it under `taskset -c 0` to pin both
processes to one core. The rounds interleave (ours then trl's, then the other order),
after `--warmup` rounds and our compilation, and the table gives medians.

  phase        ours                                 trl
  generation   sampling.sample, jitted              batch_generation (HF generate)
  rollout      token_ppo.collect, jitted            generation -> first training forward
  training     token_ppo.learn, jitted              first training forward -> last AdamW step
  step         rollout + training                   rollout + training

Tokens/s: generated completion tokens (B x N) per second for generation, rollout and
step; trained tokens (ppo_epochs x B x (Tp + N)) per second for training. The ratio is
ours / trl (above 1: ours is faster).

Differences left between the two sides:
  1. Ours runs each phase as one compiled XLA program (the minibatch steps a lax.scan);
     trl runs PyTorch eagerly, attention by `sdpa`.
  2. The rollout: ours recomputes the policy's log-probabilities with a forward pass (the
     sampler reports them at temperature 1 only; token_ppo's doc), so it runs three
     forward passes over prompt + completion (policy, reference, value); trl takes them
     from generate's scores and runs two (reference, value).
  3. The reward: ours is a jnp function inside the jitted collect; trl 1.12 requires a
     reward model, so the same program (the share of even completion tokens) is a
     parameter-free torch module that speaks trl's reward-model protocol.
  4. The optimizers: ours has two Adams (policy, value), each clipping its gradient's
     global norm at 1; trl has one AdamW (weight decay 0) over both models, loss
     pg + 0.1 vf, and no clipping (its PPO loop calls optimizer.step() directly).
  5. Logits: ours computes them at the N completion slots only; trl at all Tp + N
     positions, then slices.
  6. KL: ours is the adaptive controller (β starts at 0.1 and moves after the step, a
     scalar update not timed here); trl's kl_coef is fixed at 0.1.
  7. Padding: trl treats every token equal to its pad id (vocab - 1) as padding, so a
     sampled one (about 1 token in `vocab`) shortens that row's mask; the prompts avoid
     that id on both sides. Every tensor is dense on both sides, so the cost is the same.
  8. What is left out of trl's time: its dataloader, logging, learning-rate schedule,
     gc.collect() and empty_cache() between steps (this favours trl). Ours' `step` is
     the sum of collect and learn, not the jitted `step` (one compilation fewer).
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import NamedTuple

ONE_THREAD_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
DEFAULT_TRL_PYTHON = "/work/trl_venv/bin/python"
TRL_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmark_lm_trl.py")
PHASES = ("generation", "rollout", "training", "step")

if __name__ == "__main__":  # before JAX starts: its CPU client reads these once
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {ONE_THREAD_XLA_FLAGS}".strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from rlhf_jax.lm import model as lm_model  # noqa: E402
from rlhf_jax.lm import sampling, token_ppo  # noqa: E402


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--trl_python", default=DEFAULT_TRL_PYTHON)
  parser.add_argument("--width", type=int, default=128)
  parser.add_argument("--layers", type=int, default=4)
  parser.add_argument("--heads", type=int, default=4)
  parser.add_argument("--vocab", type=int, default=259)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--prompt_length", type=int, default=32)
  parser.add_argument("--new_tokens", type=int, default=32)
  parser.add_argument("--ppo_epochs", type=int, default=4)
  parser.add_argument("--num_minibatches", type=int, default=4)
  parser.add_argument("--warmup", type=int, default=1, help="rounds run and dropped")
  parser.add_argument("--repeats", type=int, default=5, help="rounds timed")
  parser.add_argument("--seed", type=int, default=0)
  return parser.parse_args(argv)


def check_trl_python(path: str) -> str:
  """`path` if it is an executable file; otherwise SystemExit saying how to make one."""
  if os.path.isfile(path) and os.access(path, os.X_OK):
    return path
  raise SystemExit(
    f"No Python for trl's side at --trl_python={path}. Make one (torch, transformers and "
    "trl stay out of this repo's venv):\n"
    "  python3 -m venv /work/trl_venv\n"
    "  /work/trl_venv/bin/pip install torch==2.13.0+cpu trl==1.12.0 transformers\n"
    "or pass --trl_python=<a python with them>."
  )


def worker_command(args, trl_python: str, worker: str = TRL_WORKER) -> list[str]:
  """The command line of trl's side, with the same sizes as ours."""
  sizes = ("width", "layers", "heads", "vocab", "batch", "prompt_length", "new_tokens")
  sizes += ("ppo_epochs", "num_minibatches", "seed")
  flags = [f"--{name}={getattr(args, name)}" for name in sizes]
  return [trl_python, worker, *flags, f"--steps={args.warmup + args.repeats}", "--threads=1"]


def load_worker_module(path: str = TRL_WORKER):
  """benchmark_lm_trl.py as a module; its top level needs only NumPy."""
  spec = importlib.util.spec_from_file_location("benchmark_lm_trl", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


class TrlWorker:
  """trl's side in its own interpreter, one PPO step per `step()`. Host side: a
  subprocess, its pipes and a log file of what it prints besides the protocol."""

  def __init__(self, command: list[str]):
    self.log = tempfile.NamedTemporaryFile("w+", prefix="benchmark_lm_trl_", suffix=".log")
    self.process = subprocess.Popen(
      command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True
    )
    self.ready = self._read("ready")

  def step(self) -> dict:
    self.process.stdin.write("go\n")
    self.process.stdin.flush()
    return self._read("step")

  def close(self):
    self.process.stdin.close()
    self.process.wait(timeout=60)
    self.log.close()

  def _read(self, event: str) -> dict:
    line = self.process.stdout.readline()
    if not line:
      self.process.wait(timeout=60)
      self.log.seek(0)
      tail = "".join(self.log.readlines()[-20:])
      raise RuntimeError(
        f"trl's side exited (code {self.process.returncode}) before its {event!r} line; "
        f"the end of what it printed:\n{tail}"
      )
    row = json.loads(line)
    if row.get("event") != event:
      raise RuntimeError(f"trl's side wrote {row}, expected an {event!r} line.")
    return row


def even_share(_, prompts, prompt_mask, tokens, mask):
  return jnp.sum((tokens % 2 == 0) & mask, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1)


class Ours(NamedTuple):
  one_round: Callable  # () -> {generation_s, rollout_s, learn_s} of one timed round
  compile_s: float  # the first round's seconds (compilation), not timed
  parameters: int  # the policy's


def make_ours(args, prompts) -> Ours:
  """Our side: the jitted pieces of `token_ppo` (and `sampling.sample`), compiled."""
  config = lm_model.GPTConfig(
    vocab_size=args.vocab,
    n_positions=args.prompt_length + args.new_tokens,
    n_embd=args.width,
    n_layer=args.layers,
    n_head=args.heads,
  )
  model = lm_model.make_model(config)
  params = model.init(jax.random.key(args.seed))
  ppo_config = token_ppo.default_config()
  ppo_config.max_new_tokens = args.new_tokens
  ppo_config.temperature = 1.0
  ppo_config.ppo_epochs = args.ppo_epochs
  ppo_config.num_minibatches = args.num_minibatches
  ppo = token_ppo.make_token_ppo(model, ppo_config, even_share)
  state = ppo.init(params, params)
  prompts = jnp.asarray(prompts, jnp.int32)
  prompt_mask = jnp.ones_like(prompts, bool)
  generate = jax.jit(
    lambda params, key: sampling.sample(
      model, params, key, prompts, prompt_mask, args.new_tokens, temperature=1.0
    )
  )
  collect, learn = jax.jit(ppo.collect), jax.jit(ppo.learn)
  rounds = iter(range(1 << 30))

  def seconds(function, *inputs):
    start = time.perf_counter()
    output = jax.block_until_ready(function(*inputs))
    return time.perf_counter() - start, output

  def one_round():
    key = jax.random.fold_in(jax.random.key(args.seed + 1), next(rounds))
    key_generate, key_collect, key_learn = jax.random.split(key, 3)
    generation_s, _ = seconds(generate, state.policy_params, key_generate)
    rollout_s, (experience, _) = seconds(collect, state, prompts, prompt_mask, key_collect)
    learn_s, _ = seconds(learn, state, experience, key_learn)
    return {"generation_s": generation_s, "rollout_s": rollout_s, "learn_s": learn_s}

  start = time.perf_counter()
  one_round()
  compile_s = time.perf_counter() - start
  parameters = sum(leaf.size for leaf in jax.tree.leaves(params))
  return Ours(one_round, compile_s, parameters)


def summarize(ours: list[dict], trl: list[dict], args) -> dict:
  """{phase: {tokens, ours_s, trl_s, ours_tokens_per_s, trl_tokens_per_s, ratio}} from
  the timed rounds of each side (dicts with generation_s, rollout_s, learn_s): medians
  over rounds, step = rollout + training within a round, ratio = ours / trl tokens/s."""
  generated = args.batch * args.new_tokens
  trained = args.ppo_epochs * args.batch * (args.prompt_length + args.new_tokens)
  tokens = {"generation": generated, "rollout": generated, "training": trained, "step": generated}
  phase_seconds = {
    "generation": lambda row: row["generation_s"],
    "rollout": lambda row: row["rollout_s"],
    "training": lambda row: row["learn_s"],
    "step": lambda row: row["rollout_s"] + row["learn_s"],
  }
  summary = {}
  for phase in PHASES:
    ours_s = statistics.median(map(phase_seconds[phase], ours))
    trl_s = statistics.median(map(phase_seconds[phase], trl))
    summary[phase] = {
      "tokens": tokens[phase],
      "ours_s": ours_s,
      "trl_s": trl_s,
      "ours_tokens_per_s": tokens[phase] / ours_s,
      "trl_tokens_per_s": tokens[phase] / trl_s,
      "ratio": trl_s / ours_s,
    }
  return summary


def format_table(summary: dict) -> str:
  header = (
    f"{'phase':<11}{'tokens':>7}{'ours s':>9}{'ours tok/s':>12}"
    f"{'trl s':>9}{'trl tok/s':>11}{'ours/trl':>10}"
  )
  lines = [header]
  for phase in PHASES:
    row = summary[phase]
    lines.append(
      f"{phase:<11}{row['tokens']:>7}{row['ours_s']:>9.3f}{row['ours_tokens_per_s']:>12,.0f}"
      f"{row['trl_s']:>9.3f}{row['trl_tokens_per_s']:>11,.0f}{row['ratio']:>9.2f}x"
    )
  return "\n".join(lines)


def main(argv=None):
  args = parse_args(argv)
  trl_python = check_trl_python(args.trl_python)
  prompts = load_worker_module().make_prompts(args.seed, args.batch, args.prompt_length, args.vocab)
  worker = TrlWorker(worker_command(args, trl_python))
  try:
    our_side = make_ours(args, prompts)
    ours, trl = [], []
    for index in range(args.warmup + args.repeats):
      if index % 2 == 0:
        ours.append(our_side.one_round())
        trl.append(worker.step())
      else:
        trl.append(worker.step())
        ours.append(our_side.one_round())
  finally:
    worker.close()
  ours, trl = ours[args.warmup :], trl[args.warmup :]
  updates = args.ppo_epochs * args.num_minibatches
  if any(row["optimizer_steps"] != updates for row in trl):
    made = [row["optimizer_steps"] for row in trl]
    raise RuntimeError(f"trl's steps made {made} optimizer steps each, not {updates}.")
  summary = summarize(ours, trl, args)

  ready = worker.ready
  if our_side.parameters != ready["parameters"]:
    print(f"WARNING: ours has {our_side.parameters:,} parameters, trl's {ready['parameters']:,}")
  print(
    f"GPT-2 width {args.width}, {args.layers} layers, {args.heads} heads, vocab {args.vocab} "
    f"({ready['parameters']:,} parameters each); batch {args.batch}, prompts {args.prompt_length} "
    f"tokens, {args.new_tokens} new tokens at temperature 1; ppo_epochs {args.ppo_epochs} x "
    f"num_minibatches {args.num_minibatches}"
  )
  print(
    f"ours: jax {jax.__version__} on {jax.devices()[0].device_kind}, "
    f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; "
    f"compilation {our_side.compile_s:.1f} s, not timed"
  )
  print(
    f"trl:  trl {ready['trl']}, torch {ready['torch']}, transformers {ready['transformers']}, "
    f"torch.set_num_threads({ready['threads']}), attention {ready['attention']}"
  )
  print(
    f"CPU affinity {sorted(os.sched_getaffinity(0))} (the trl process inherits it); medians "
    f"of {args.repeats} interleaved rounds after {args.warmup} dropped"
  )
  print(format_table(summary))
  return summary


if __name__ == "__main__":
  main(sys.argv[1:])
