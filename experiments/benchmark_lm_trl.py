"""trl's side of experiments/benchmark_lm.py: trl's PPO step, timed by phase (PyTorch, CPU).

  printf "go\ngo\ngo\n" | /work/trl_venv/bin/python experiments/benchmark_lm_trl.py --steps=3

This is NOT a module of rlhf_jax and runs in another interpreter (torch, transformers and
trl==1.12.0, the last release with a PPO trainer: `trl.experimental.ppo`, removed in
1.13); benchmark_lm.py starts it as a subprocess and drives it. It imports only the
standard library and NumPy at the top, so benchmark_lm.py (and its tests) can read
`make_prompts` from it without torch.

It builds, from a `transformers.GPT2Config` with random weights (no hub download), the
policy (GPT2LMHeadModel), a deep copy as the reference, a value model
(GPT2ForSequenceClassification, one label) and a reward that is a program: the share of
even tokens in the completion, wrapped as a parameter-free module that speaks trl's
reward-model protocol (`base_model_prefix`, a backbone with `hidden_states`, `score`).
Then it runs `PPOTrainer.train()` for `--steps` steps of one batch each and times three
phases of each step by wrapping trl's own functions, without changing what they do:

  generation_s  trl's `batch_generation` (HF `generate`, sampling, with the scores)
  rollout_s     from generation's start to the first training forward pass: generation,
                the reference and value forward passes, the reward, the KL-penalized
                rewards and GAE
  learn_s       from the first training forward pass to the end of the last optimizer
                step: num_ppo_epochs x num_mini_batches forward, backward, AdamW steps

Protocol: before each step it reads a line from stdin ("go"; end of input stops it),
and after each step it writes one JSON line to stdout, its real stdout: everything the
libraries print goes to stderr. The first line it writes is {"event": "ready", versions}.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np


def make_prompts(seed: int, batch: int, prompt_length: int, vocab: int):
  """int64 [batch, prompt_length] prompts in [0, vocab - 1): the last id is trl's pad
  token and must not appear in a prompt (trl masks every pad id as padding)."""
  return np.random.default_rng(seed).integers(0, vocab - 1, (batch, prompt_length))


def parse_args(argv=None):
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
  parser.add_argument("--steps", type=int, default=6)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--threads", type=int, default=1)
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  # Only this process writes the protocol to the real stdout; libraries print to stderr.
  protocol = os.fdopen(os.dup(1), "w", buffering=1)
  os.dup2(2, 1)
  sys.stdout = sys.stderr
  os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

  import copy

  import datasets
  import tokenizers
  import torch
  import transformers
  import trl
  from transformers import TrainerCallback
  from trl.experimental.ppo import PPOConfig, PPOTrainer
  from trl.experimental.ppo import ppo_trainer as ppo_module

  torch.set_num_threads(args.threads)
  torch.set_num_interop_threads(args.threads)
  torch.manual_seed(args.seed)
  pad_id = args.vocab - 1
  names = [f"t{i}" for i in range(args.vocab)]
  word_level = tokenizers.models.WordLevel({name: i for i, name in enumerate(names)}, "t0")
  tokenizer = transformers.PreTrainedTokenizerFast(
    tokenizer_object=tokenizers.Tokenizer(word_level), pad_token=names[pad_id], eos_token=names[0]
  )
  config = transformers.GPT2Config(
    vocab_size=args.vocab,
    n_positions=args.prompt_length + args.new_tokens,
    n_embd=args.width,
    n_layer=args.layers,
    n_head=args.heads,
    bos_token_id=None,
    eos_token_id=None,  # no stop token: every completion is new_tokens long, as ours
    pad_token_id=pad_id,
    num_labels=1,
  )
  policy = transformers.GPT2LMHeadModel(config)
  reference = copy.deepcopy(policy)
  value_model = transformers.GPT2ForSequenceClassification(config)

  class EvenShareBackbone(torch.nn.Module):
    """hidden_states[-1][:, t, 0]: the share of even tokens among completion tokens
    0..t, so trl's reward read at the last real token is the completion's share."""

    def forward(self, input_ids, attention_mask, **_):
      completion = input_ids[:, args.prompt_length :]
      real = attention_mask[:, args.prompt_length :].float()
      even = (completion % 2 == 0).float() * real
      share = torch.cumsum(even, 1) / torch.clamp(torch.cumsum(real, 1), min=1)
      share = torch.cat([torch.zeros_like(input_ids[:, : args.prompt_length]).float(), share], 1)
      return transformers.modeling_outputs.BaseModelOutput(hidden_states=(share[..., None],))

  class EvenShareReward(torch.nn.Module):
    base_model_prefix = "backbone"

    def __init__(self):
      super().__init__()
      self.backbone = EvenShareBackbone()

    def score(self, hidden):
      return hidden

  prompts = make_prompts(args.seed, args.batch, args.prompt_length, args.vocab)
  dataset = datasets.Dataset.from_dict({"input_ids": prompts.tolist()})
  workdir = tempfile.mkdtemp(prefix="benchmark_lm_trl_")
  ppo_config = PPOConfig(
    output_dir=workdir,
    per_device_train_batch_size=args.batch,  # one micro batch per minibatch:
    gradient_accumulation_steps=1,  # an optimizer step per minibatch, as ours
    num_mini_batches=args.num_minibatches,
    num_ppo_epochs=args.ppo_epochs,
    local_rollout_forward_batch_size=args.batch,
    total_episodes=args.batch * args.steps,
    response_length=args.new_tokens,
    temperature=1.0,
    stop_token_id=None,
    missing_eos_penalty=None,
    kl_coef=0.1,  # ours' initial beta; trl's KL coefficient is fixed
    learning_rate=1e-5,
    gradient_checkpointing=False,  # ours recomputes nothing in the backward pass
    bf16=False,
    fp16=False,
    use_cpu=True,
    report_to="none",
    save_strategy="no",
    logging_steps=1,
    disable_tqdm=True,
    num_sample_generations=0,
    seed=args.seed,
  )
  trainer = PPOTrainer(
    args=ppo_config,
    processing_class=tokenizer,
    model=policy,
    ref_model=reference,
    reward_model=EvenShareReward(),
    train_dataset=dataset,
    value_model=value_model,
    eval_dataset=dataset,
  )

  marks = {}
  original_generation, original_forward = ppo_module.batch_generation, ppo_module.forward
  optimizer_step = trainer.optimizer.step

  def timed_generation(*a, **k):
    command = sys.stdin.readline().strip()
    if command != "go":
      protocol.write(json.dumps({"event": "stopped", "command": command}) + "\n")
      protocol.close()
      os._exit(0)  # out of trl's loop at once: nothing else to run or save
    marks.clear()
    marks["start"] = time.perf_counter()
    output = original_generation(*a, **k)
    marks["generated"] = time.perf_counter()
    return output

  def timed_forward(model, *a, **k):
    if "learn_start" not in marks and isinstance(model, ppo_module.PolicyAndValueWrapper):
      marks["learn_start"] = time.perf_counter()
    return original_forward(model, *a, **k)

  def timed_optimizer_step(*a, **k):
    output = optimizer_step(*a, **k)
    marks["learned"] = time.perf_counter()
    marks["optimizer_steps"] = marks.get("optimizer_steps", 0) + 1
    return output

  class Report(TrainerCallback):
    def on_step_end(self, _args, state, control, **_):
      row = {
        "event": "step",
        "step": state.global_step,
        "generation_s": marks["generated"] - marks["start"],
        "rollout_s": marks["learn_start"] - marks["start"],
        "learn_s": marks["learned"] - marks["learn_start"],
        "optimizer_steps": marks["optimizer_steps"],
      }
      protocol.write(json.dumps(row) + "\n")
      return control

  ppo_module.batch_generation = timed_generation
  ppo_module.forward = timed_forward
  trainer.optimizer.step = timed_optimizer_step
  trainer.add_callback(Report())
  ready = {
    "event": "ready",
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "trl": trl.__version__,
    "threads": torch.get_num_threads(),
    "attention": policy.config._attn_implementation,
    "parameters": sum(p.numel() for p in policy.parameters()),
  }
  protocol.write(json.dumps(ready) + "\n")
  trainer.train()
  protocol.write(json.dumps({"event": "done"}) + "\n")


if __name__ == "__main__":
  main()
