"""SFT of the `cpu`-sized GPT (D 128, 4 layers, 4 heads, 0.86M parameters with the byte
vocabulary of 259) on the default task (`rlhf_jax/lm/synthetic.py`), byte tokens.

  python -m rlhf_jax.lm.sft_main --config=configs/lm_sft.py --workdir=runs/lm_sft

Measured once on the 2-core CPU while other jobs kept it loaded (load average ~3.5):
2,000 steps of 32 sequences (168 tokens, ~2,900 real tokens a step) took 31 min, about
3,800 tokens/s once the other load eased (1,100-1,700 while it was heaviest). The
logged batch loss went 2.24 (step 100; log 259 = 5.56 at the start) -> 0.98 (400) ->
0.55 (900) and stayed near 0.53 to step 2,000, token accuracy ~0.79. Sampling 64 held-out
prompts at temperature 1: 83% of the completions had perfect gold form (mean form 0.955,
mean gold +0.045; the corpus's mean gold is ~0); a second draw gave 89% and 0.977.
Samples at the end:
  'Feedback on the new laptop:' -> ' My button sounded nice although this dessert felt narrow.'
  'What I thought of the old market:' -> ' Overall, I appreciated my style.'
  'A review of the small printer:' -> ' My crowd looked brilliant and our trip felt really bland.'
The flaws left are misspellings ("clovel", "scane") and stacked adverbs ("truly
extremely"); nouns often miss the prompt's topic, which the gold reward ignores.
"""

from rlhf_jax.lm.config import default_config


def get_config():
  config = default_config()
  config.tokenizer = "byte"
  config.model.size = "cpu"  # its vocabulary becomes the byte tokenizer's 259
  config.model.n_positions = 256
  config.data.sequence_length = 168  # the longest default-task example has 162 tokens
  config.train.steps = 2_000
  config.train.batch_size = 32
  config.train.learning_rate = 1e-3
  return config
