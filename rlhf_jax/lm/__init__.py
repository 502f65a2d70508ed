"""Language models: RLHF on a GPT-2-layout transformer (README "Language models").

model.py, sampling.py, weights.py   the transformer, KV-cache sampling, GPT-2 checkpoints
tokenizer.py                        bytes (default, no files) or GPT-2 BPE from local files
lexicon.py, synthetic.py, gold.py   the offline default task and its gold reward
data.py                             JSONL: SFT text, prompts, comparisons
sft.py, sft_main.py, config.py      supervised fine-tuning and its runner
heads.py, losses.py                 reward/value heads; BT, KL penalty, GAE, token PPO, DPO
rm.py, token_ppo.py, dpo.py         the stages' jitted steps
best_of_n.py                        the no-training baseline
evaluate.py, pipeline.py            gold, proxy and KL of a policy; the staged and online runs
sharding.py                         a (data, model) mesh with placement rules as data
human.py                            a person labels the pairs in the labeling app
"""
