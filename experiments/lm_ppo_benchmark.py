"""Throughput of one token-PPO step on a small random GPT-2-layout model.

  python experiments/lm_ppo_benchmark.py
  python experiments/lm_ppo_benchmark.py --width=128 --layers=4 --vocab=259 --batch=16 \
      --prompt_length=32 --new_tokens=32 --repeats=5

Times, after a first call that compiles, the three jitted pieces of `token_ppo`:
collect (sampling + the policy, reference and value forward passes + the score), learn
(ppo_epochs x num_minibatches Adam steps of policy and value model) and the whole step.
Prints the median seconds of each and tokens/s: generated completion tokens per second
for collect and step, and trained tokens (ppo_epochs x B x (Tp + N)) per second for
learn. The reward is a program (the share of even tokens), so no reward model runs.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from rlhf_jax.lm import model as lm_model
from rlhf_jax.lm import token_ppo


def even_share(_, prompts, prompt_mask, tokens, mask):
  return jnp.sum((tokens % 2 == 0) & mask, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1)


def timed(function, *args, repeats: int):
  """(median seconds over `repeats` calls after a compiling one, the last output)."""
  output = jax.block_until_ready(function(*args))
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    output = jax.block_until_ready(function(*args))
    seconds.append(time.perf_counter() - start)
  return statistics.median(seconds), output


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--width", type=int, default=128)
  parser.add_argument("--layers", type=int, default=4)
  parser.add_argument("--heads", type=int, default=4)
  parser.add_argument("--vocab", type=int, default=259)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--prompt_length", type=int, default=32)
  parser.add_argument("--new_tokens", type=int, default=32)
  parser.add_argument("--ppo_epochs", type=int, default=4)
  parser.add_argument("--num_minibatches", type=int, default=4)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()

  config = lm_model.GPTConfig(
    vocab_size=args.vocab,
    n_positions=args.prompt_length + args.new_tokens,
    n_embd=args.width,
    n_layer=args.layers,
    n_head=args.heads,
  )
  model = lm_model.make_model(config)
  params = model.init(jax.random.key(0))
  ppo_config = token_ppo.default_config()
  ppo_config.max_new_tokens = args.new_tokens
  ppo_config.ppo_epochs = args.ppo_epochs
  ppo_config.num_minibatches = args.num_minibatches
  ppo = token_ppo.make_token_ppo(model, ppo_config, even_share)
  state = ppo.init(params, params)
  prompts = jax.random.randint(jax.random.key(1), (args.batch, args.prompt_length), 0, args.vocab)
  prompt_mask = jnp.ones_like(prompts, bool)
  key = jax.random.key(2)

  collect, learn, step = jax.jit(ppo.collect), jax.jit(ppo.learn), jax.jit(ppo.step)
  collect_s, (experience, _) = timed(
    collect, state, prompts, prompt_mask, key, repeats=args.repeats
  )
  learn_s, _ = timed(learn, state, experience, key, repeats=args.repeats)
  step_s, _ = timed(step, state, prompts, prompt_mask, key, repeats=args.repeats)

  generated = args.batch * args.new_tokens
  trained = args.ppo_epochs * args.batch * (args.prompt_length + args.new_tokens)
  print(f"device {jax.devices()[0].device_kind}; {config}")
  print(f"collect {collect_s:.3f} s  {generated / collect_s:,.0f} generated tokens/s")
  print(f"learn   {learn_s:.3f} s  {trained / learn_s:,.0f} trained tokens/s")
  print(f"step    {step_s:.3f} s  {generated / step_s:,.0f} generated tokens/s")


if __name__ == "__main__":
  main()
