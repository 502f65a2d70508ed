"""SFT -> comparisons -> reward model -> PPO, best-of-n and DPO on the default task with
the `cpu`-sized GPT (D 128, 4 layers, 0.86M parameters, byte tokens).

  python -m rlhf_jax.lm.pipeline --config=configs/lm_rlhf.py --workdir=runs/lm_rlhf

`--config=configs/lm_rlhf.py:tensor_parallel` picks the sharding preset (default fsdp);
`--config.sharding.mesh='(("data", 2), ("model", 4))'` the mesh.
`rlhf_jax/lm/config.py`'s pipeline_config() holds the values and says what each is;
rlhf_jax/lm/pipeline.py says what each stage writes. Results: the README's "Language
models" section.
"""

from rlhf_jax.lm.config import pipeline_config
from rlhf_jax.lm.sharding import sharding_config


def get_config(preset: str = "fsdp"):
  config = pipeline_config()
  config.sharding = sharding_config(preset or "fsdp", mesh=config.sharding.mesh)
  return config
