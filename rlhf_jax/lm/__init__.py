"""Language models: RLHF on a GPT-2-layout transformer (issue 20, in progress).

model.py, sampling.py, weights.py   the transformer, KV-cache sampling, GPT-2 checkpoints
tokenizer.py                        bytes (default, no files) or GPT-2 BPE from local files
lexicon.py, synthetic.py, gold.py   the offline default task and its gold reward
data.py                             JSONL: SFT text, prompts, comparisons
sft.py, sft_main.py, config.py      supervised fine-tuning and its runner
heads.py, losses.py                 reward/value heads; BT, KL penalty, GAE, token PPO, DPO
rm.py, token_ppo.py, dpo.py         the stages' jitted steps
best_of_n.py                        the no-training baseline
sharding.py                         a (data, model) mesh with placement rules as data
"""
