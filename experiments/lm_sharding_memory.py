"""Memory per device of an LM and its Adam state under each sharding preset.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python experiments/lm_sharding_memory.py
  ... --size=gpt2-medium --mesh=2,4 --batch=8 --length=256

For each preset of `rlhf_jax.lm.sharding`: the bytes one device holds of the parameters
and of Adam's state at rest, from their shardings, and XLA's `memory_analysis` of the
compiled train step (arguments, and the temporaries of one step on a batch of
`--batch` x `--length` tokens). Nothing runs but the compiler; the mesh needs
data x model devices (fake CPU devices do). Measured for `gpt2` on (data 2, model 4):
see MEASURED in rlhf_jax/lm/sharding.py.
"""

import argparse
import functools

import jax
import jax.numpy as jnp
import optax

from rlhf_jax.lm import model as model_lib
from rlhf_jax.lm import sharding as lm_sharding


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="gpt2", choices=tuple(model_lib.SIZES))
  parser.add_argument("--mesh", default="2,4", help="data,model")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--length", type=int, default=256)
  args = parser.parse_args()
  data, model_axis = (int(size) for size in args.mesh.split(","))
  model = model_lib.make_model(model_lib.gpt_config(args.size))
  optimizer = optax.adam(1e-4)
  loss_fn = functools.partial(lm_sharding.next_token_loss, model)
  abstract_params = jax.eval_shape(model.init, jax.random.key(0))
  count = sum(leaf.size for leaf in jax.tree.leaves(abstract_params))
  print(
    f"{args.size}: {count / 1e6:.1f}M parameters; params + Adam on one device: "
    f"{12 * count / 1e6:,.0f} MB"
  )
  print(f"mesh data {data} x model {model_axis}, batch {args.batch} x {args.length} tokens")
  print(f"{'preset':<16} {'params MB':>10} {'Adam MB':>10} {'step temp MB':>13}")
  for preset in lm_sharding.PRESETS:
    config = lm_sharding.sharding_config(preset, (("data", data), ("model", model_axis)))
    trainer = lm_sharding.make_sharded_trainer(config, model.init, loss_fn, optimizer)
    abstract_state = jax.eval_shape(trainer.init, jax.random.key(0))
    params_mb, adam_mb = (
      lm_sharding.bytes_per_device(tree, shardings) / 1e6
      for tree, shardings in zip(abstract_state, trainer.shardings, strict=True)
    )
    placed = jax.tree.map(
      lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
      abstract_state,
      trainer.shardings,
    )
    batch = {
      name: jax.ShapeDtypeStruct((args.batch, args.length), dtype, sharding=trainer.batch_sharding)
      for name, dtype in (("tokens", jnp.int32), ("mask", jnp.bool_))
    }
    memory = trainer.step.lower(placed, batch).compile().memory_analysis()
    temp_mb = memory.temp_size_in_bytes / 1e6
    print(f"{preset:<16} {params_mb:>10,.0f} {adam_mb:>10,.0f} {temp_mb:>13,.0f}")


if __name__ == "__main__":
  main()
