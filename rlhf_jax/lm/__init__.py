"""Language models: a GPT-2-layout transformer, KV-cache sampling, GPT-2 checkpoints."""
