"""Training a language model sharded over a mesh of `data` x `model` devices.

Where every parameter lives is data in the config (`sharding_config`): an ordered list of
rules (regex over the parameter's '/'-joined path, partition spec), the first match wins.

  spec per dimension: None (whole), "data" / "model", or ("data", "model") (over both)
  params:      NamedSharding(mesh, P(*spec of the first rule matching the path))
  Adam mu, nu: the shardings of their parameters (optax.tree_utils.tree_map_params)
  batch:       leading axis over `batch_axes`; the model's output constrained the same way
  compute:     with whole weights (`gather_params`, FSDP) or with the split ones (TP)

Two presets (`PRESETS`), for GPT-2's layout (D = n_embd; Dense kernels are [in, out]):

  parameter            [shape]    "fsdp"                    "tensor_parallel" (Megatron)
  wte/embedding        [V, D]     D over data x model       D over model
  wpe/embedding        [T, D]     T over data x model       D over model
  attn/c_attn/kernel   [D, 3D]    3D over data x model      3D over model  (column-parallel)
  attn/c_proj/kernel   [D, D]     in over data x model      in over model  (row-parallel)
  mlp/c_fc/kernel      [D, 4D]    4D over data x model      4D over model  (column-parallel)
  mlp/c_proj/kernel    [4D, D]    4D over data x model      4D over model  (row-parallel)
  c_attn, c_fc biases  [3D], [4D] whole                     over model (with their columns)
  c_proj biases, ln_*  [D]        whole                     whole
  head/{kernel, bias}  [D(, E)]   whole                     whole
  batch                [B, ...]   B over data x model       B over data

"fsdp" splits each weight matrix along its largest dimension over all devices, and the
batch too: every device holds 1/N of the weights and of Adam's moments. The step computes
with whole weights (`gather_params`: a constraint to replicated at the top of the loss), so
XLA all-gathers each matrix for the forward pass and sums the gradients of the batch's
shards back into the split layout; no activation crosses devices. Left to itself, XLA's
propagation instead kept the weights split in the compute and moved activations: on the
`gpt2` size it all-reduced the whole batch's logits [B, T, V]. The vocabulary (GPT-2's
50,257 is odd) divides by no even mesh, so wte is split on D instead; vectors (biases,
layer norms, under 0.1% of GPT-2) stay whole. "tensor_parallel" splits every matrix over
`model` only and the batch over `data`, and computes with the split weights: the
attention's and the MLP's first matrices by output column, their second by input row, so
the hidden activations between them stay split and an all-reduce joins the row-parallel
sums. No weight matrix is ever gathered. Two departures from Megatron-LM, both correct but
costlier in communication: the embedding is split on D (the vocabulary does not divide), so
the tied unembedding sums partial logits over `model`; and c_attn's fused q|k|v columns are
split in contiguous blocks, not per head, so XLA regroups them before attention.

The mesh's axes are Auto (`jax.sharding.AxisType.Auto`), not Explicit as `jax.make_mesh`
defaults to: under Explicit axes the model's embedding lookup (a gather of a [V, D@model]
table by [B@data, T] tokens) raises a `ShardingTypeError` asking for an out_sharding, and
the model, written for one device, would need such annotations wherever a split dimension
is reshaped or gathered. Under Auto axes the shardings of the inputs, the outputs and the
constraints are the contract and XLA places the rest.

MEASURED (jax 0.10.2, fake CPU devices; float32, Adam; experiments/lm_sharding_memory.py):
MB one device holds, at rest from the shardings (`bytes_per_device`) and as temporaries
of the compiled train step from XLA's `memory_analysis` (batch 8 x 256 tokens; compiled,
not run):

  size (params)         mesh             preset           params   Adam  step temp   peak
  gpt2 (124.4M)         one device       -                   498    996      4,815  6,309
                        data 2 x model 4 fsdp                 63    125      1,304  1,492
                                         tensor_parallel     125    249      1,224  1,598
  gpt2-medium (354.8M)  one device       -                 1,419  2,839      9,378 13,636
                        data 2 x model 4 fsdp                179    357      2,703  3,239
                                         tensor_parallel     355    711      1,836  2,902

So a model whose step needs 13.6 GB on one device compiles to 3.3 GB a device on 8: a model
larger than one device's memory fits spread out. At rest fsdp holds 1/8 (plus the whole
vectors), tensor_parallel 1/4 (replicated over `data`). fsdp's temporaries hold whole
weights and whole gradients at once (the CPU compiler gathers every matrix up front and
sums all gradients in one tupled all-reduce); gathering layer by layer (a scan over the
blocks, or a scheduler that places the gathers) is what would bring them down.

The pipeline's stages (`sft_main.py`, `pipeline.py`) place their states with a
`Placement` (`make_placement(config.sharding)`): every leaf of a state whose path matches
a rule as that rule says (the parameters of the policy, the value model, the reward model
and the reference, and Adam's moments, whose paths end as their parameters' do), every
other leaf (step counts, the KL controller, a label buffer) whole; batches split over
`batch_axes`; and the model's functions wrapped to gather the weights (fsdp) and keep
their outputs split by batch. Each jitted step keeps the state's shardings as they came
in (`Placement.jit_step`).

Everything here is pure but `make_lm_mesh` (it lists devices); jit is applied inside
`make_sharded_trainer` and `Placement.jit_step`, where the shardings are known.
"""

import math
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA = "data"
MODEL = "model"
LM_AXES = (DATA, MODEL)
EVERY_DEVICE = (DATA, MODEL)  # a dimension split over both axes: all devices of the mesh

_VECTORS_WHOLE = (
  (r"(^|/)ln_(\d+|f)/(scale|bias)$", ()),
  (r"(^|/)head/(kernel|bias)$", ()),  # heads.py: a reward model's or a value head's
)


class Preset(NamedTuple):
  rules: tuple  # ((regex over the '/'-joined path, spec: one entry per dimension), ...)
  batch_axes: tuple  # the mesh axes the batch's leading dimension is split over
  gather_params: bool  # compute with whole weights (FSDP), or with the split ones (TP)


PRESETS = {
  "fsdp": Preset(
    rules=(
      (r"(^|/)wte/embedding$", (None, EVERY_DEVICE)),  # [V, D]: V (50,257) is odd
      (r"(^|/)wpe/embedding$", (EVERY_DEVICE, None)),  # [T, D]
      (r"(^|/)attn/c_attn/kernel$", (None, EVERY_DEVICE)),  # [D, 3D]
      (r"(^|/)attn/c_proj/kernel$", (EVERY_DEVICE, None)),  # [D, D]
      (r"(^|/)mlp/c_fc/kernel$", (None, EVERY_DEVICE)),  # [D, 4D]
      (r"(^|/)mlp/c_proj/kernel$", (EVERY_DEVICE, None)),  # [4D, D]
      (r"(^|/)(c_attn|c_proj|c_fc)/bias$", ()),
      *_VECTORS_WHOLE,
    ),
    batch_axes=EVERY_DEVICE,
    gather_params=True,
  ),
  "tensor_parallel": Preset(
    rules=(
      (r"(^|/)(wte|wpe)/embedding$", (None, MODEL)),  # [V or T, D]: on the hidden dim
      (r"(^|/)(attn/c_attn|mlp/c_fc)/kernel$", (None, MODEL)),  # column-parallel
      (r"(^|/)(attn/c_attn|mlp/c_fc)/bias$", (MODEL,)),
      (r"(^|/)(attn|mlp)/c_proj/kernel$", (MODEL, None)),  # row-parallel
      (r"(^|/)(attn|mlp)/c_proj/bias$", ()),  # added once, after the all-reduce
      *_VECTORS_WHOLE,
    ),
    batch_axes=(DATA,),
    gather_params=False,
  ),
}


def sharding_config(preset: str = "fsdp", mesh=((DATA, -1), (MODEL, 1))):
  """The sharding section of an LM config (e.g. `config.sharding =
  sharding_config("tensor_parallel", (("data", 2), ("model", 4)))`): `mesh` ((axis, size),
  ...; -1: the remaining devices), and a preset's `rules`, `batch_axes` and
  `gather_params`, copied to be edited as data. Nothing is derived from it and written
  back; `make_sharded_trainer` reads it."""
  if preset not in PRESETS:
    raise ValueError(f"Unknown sharding preset {preset!r}; choose one of {tuple(PRESETS)}.")
  config = ml_collections.ConfigDict()
  config.mesh = tuple(mesh)
  config.rules = PRESETS[preset].rules
  config.batch_axes = PRESETS[preset].batch_axes
  config.gather_params = PRESETS[preset].gather_params
  return config


def make_lm_mesh(axes, devices=None) -> jax.sharding.Mesh:
  """A mesh with axes ("data", "model") from ((name, size), ...) in any order; a missing
  axis has size 1, one size may be -1 (the devices left over). It takes the first
  data x model devices of `devices` (default: all of them)."""
  devices = jax.devices() if devices is None else list(devices)
  sizes = dict(axes)
  unknown = set(sizes) - set(LM_AXES)
  if unknown or len(sizes) != len(tuple(axes)):
    raise ValueError(f"mesh={tuple(axes)!r}: the axes are {LM_AXES}, each at most once.")
  sizes = {name: sizes.get(name, 1) for name in LM_AXES}
  rest = [name for name, size in sizes.items() if size == -1]
  known = math.prod(size for size in sizes.values() if size != -1)
  if len(rest) > 1 or known < 1 or any(size < -1 or size == 0 for size in sizes.values()):
    raise ValueError(f"mesh={tuple(axes)!r}: sizes are positive, or -1 for at most one axis.")
  if rest:
    if len(devices) % known:
      raise ValueError(f"mesh={tuple(axes)!r}: {len(devices)} devices do not divide by {known}.")
    sizes[rest[0]] = len(devices) // known
  if math.prod(sizes.values()) > len(devices):
    raise ValueError(
      f"mesh={tuple(axes)!r} asks for {math.prod(sizes.values())} devices; "
      f"there are {len(devices)}."
    )
  devices = devices[: math.prod(sizes.values())]
  auto = (jax.sharding.AxisType.Auto,) * len(LM_AXES)  # why Auto: the module's docstring
  return jax.make_mesh(tuple(sizes.values()), LM_AXES, axis_types=auto, devices=devices)


def path_name(path) -> str:
  """'h_0/attn/c_attn/kernel' from a pytree key path (dict keys, attributes, indices)."""
  names = []
  for key in path:
    for field in ("key", "name", "idx"):
      if hasattr(key, field):
        names.append(str(getattr(key, field)))
        break
    else:
      names.append(str(key))
  return "/".join(names)


def _axis_size(mesh, axes) -> int:
  axes = (axes,) if isinstance(axes, str) else tuple(axes)
  return math.prod(mesh.shape[axis] for axis in axes)


def spec_for(mesh, name: str, shape, rules) -> P:
  """The partition spec of the first rule whose regex matches `name`, checked against
  `shape` and the mesh. ValueError naming the parameter if none matches, if the spec has
  more entries than dimensions, names an axis the mesh lacks, or does not divide."""
  matched = next(((pattern, spec) for pattern, spec in rules if re.search(pattern, name)), None)
  if matched is None:
    raise ValueError(
      f"No sharding rule matches the parameter {name!r} {tuple(shape)}; add a "
      f"(regex, spec) to the rules (use () to keep it whole)."
    )
  pattern, spec = matched
  spec = tuple(spec)
  if len(spec) > len(shape):
    raise ValueError(
      f"Rule {pattern!r} gives {name!r} {tuple(shape)} the spec {spec}: more entries than "
      "dimensions."
    )
  for dim, (length, axes) in enumerate(zip(shape, spec, strict=False)):
    if axes is None:
      continue
    missing = {axes} if isinstance(axes, str) else set(axes)
    missing -= set(mesh.axis_names)
    if missing:
      raise ValueError(f"Rule {pattern!r} for {name!r} names axes {missing} the mesh lacks.")
    size = _axis_size(mesh, axes)
    if length % size:
      raise ValueError(
        f"Rule {pattern!r} splits dimension {dim} of {name!r} {tuple(shape)} over {axes} "
        f"({size} devices); {length} does not divide by {size}."
      )
  return P(*spec)


def param_shardings(mesh, abstract_params, rules):
  """A pytree of NamedSharding, one per parameter, by the first matching rule. `mesh`
  may be a `jax.sharding.AbstractMesh` (to size a placement without the devices)."""

  def place(path, leaf):
    return NamedSharding(mesh, spec_for(mesh, path_name(path), leaf.shape, rules))

  return jax.tree_util.tree_map_with_path(place, abstract_params)


def optimizer_shardings(optimizer, abstract_opt_state, params_shardings):
  """Shardings of an optax state: every parameter-shaped part (Adam's mu and nu, a
  momentum) as its parameters, the rest (step counts) whole. optax finds those parts by
  initializing the optimizer on placeholders (`optax.tree_utils.tree_map_params`), so no
  path or shape is guessed. Optimizers whose state is not parameter-shaped (Adafactor's
  factored moments) need rules of their own."""
  mesh = jax.tree.leaves(params_shardings)[0].mesh
  return optax.tree_utils.tree_map_params(
    optimizer,
    lambda _, sharding: sharding,
    abstract_opt_state,
    params_shardings,
    transform_non_params=lambda _: NamedSharding(mesh, P()),
  )


def bytes_per_device(abstract_tree, shardings) -> int:
  """The bytes one device holds of a tree placed by `shardings` (each leaf's shard shape;
  every device holds the same amount under these even splits)."""
  leaves = jax.tree.leaves(abstract_tree)
  placements = jax.tree.leaves(shardings)
  return sum(
    math.prod(sharding.shard_shape(leaf.shape)) * jnp.dtype(leaf.dtype).itemsize
    for leaf, sharding in zip(leaves, placements, strict=True)
  )


def next_token_loss(model, params, batch, constrain=lambda x: x):
  """SFT's loss on a batch {"tokens": int [B, T], "mask": [B, T]}: the mean over real
  tokens t >= 1 (with a real token before) of -log softmax(logits[t - 1])[tokens[t]].
  `constrain` places the logits [B, T, V] (batch over the data axes)."""
  tokens, mask = batch["tokens"], batch["mask"].astype(bool)
  logits = constrain(model.apply(params, tokens, mask))
  log_probs = jax.nn.log_softmax(logits[:, :-1], axis=-1)
  taken = jnp.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1)[..., 0]
  weight = mask[:, 1:] & mask[:, :-1]
  return -jnp.sum(jnp.where(weight, taken, 0.0)) / jnp.maximum(jnp.sum(weight), 1)


class LMState(NamedTuple):
  params: Any
  opt_state: Any


class ShardedTrainer(NamedTuple):
  mesh: jax.sharding.Mesh
  shardings: LMState  # NamedShardings of the params and of the optimizer state
  batch_sharding: NamedSharding  # every batch leaf: [B, ...], B over `batch_axes`
  init: Callable  # key -> LMState, created already sharded
  start: Callable  # params (e.g. an SFT model's) -> LMState, sharded, fresh optimizer
  loss_and_grads: Callable  # (params, batch) -> (loss [], grads sharded as the params)
  step: Callable  # (state, batch) -> (state, {"loss", "grad_norm"}); the state is donated


def make_sharded_trainer(config, init_params, loss_fn, optimizer, devices=None):
  """Jitted init and train step for `config` (a `sharding_config` section).

  init_params: key -> params (e.g. `model.init`, or one that adds a head).
  loss_fn: (params, batch, constrain) -> scalar; `constrain(x)` places x's leading axis
    over the batch axes: apply it to the model's output (`next_token_loss` does).
  optimizer: an optax GradientTransformation.
  """
  mesh = make_lm_mesh(config.mesh, devices)
  abstract_params = jax.eval_shape(init_params, jax.random.PRNGKey(0))
  params_shardings = param_shardings(mesh, abstract_params, config.rules)
  abstract_opt_state = jax.eval_shape(optimizer.init, abstract_params)
  shardings = LMState(
    params_shardings, optimizer_shardings(optimizer, abstract_opt_state, params_shardings)
  )
  batch_sharding = NamedSharding(mesh, P(tuple(config.batch_axes)))
  whole = NamedSharding(mesh, P())

  def constrain(x):
    spec = P(tuple(config.batch_axes), *([None] * (x.ndim - 1)))
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

  def loss_and_grads(params, batch):
    batch = jax.tree.map(constrain, batch)

    def loss(params):
      if config.gather_params:  # FSDP: whole weights for the compute, split at rest
        params = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, whole), params)
      return loss_fn(params, batch, constrain)

    return jax.value_and_grad(loss)(params)

  def step(state, batch):
    loss, grads = loss_and_grads(state.params, batch)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
    return LMState(params, opt_state), metrics

  init_optimizer = jax.jit(optimizer.init, out_shardings=shardings.opt_state)

  def start(params):
    params = jax.device_put(params, params_shardings)
    return LMState(params, init_optimizer(params))

  return ShardedTrainer(
    mesh=mesh,
    shardings=shardings,
    batch_sharding=batch_sharding,
    init=jax.jit(
      lambda key: LMState(params := init_params(key), optimizer.init(params)),
      out_shardings=shardings,
    ),
    start=start,
    loss_and_grads=jax.jit(
      loss_and_grads,
      in_shardings=(params_shardings, batch_sharding),
      out_shardings=(whole, params_shardings),
    ),
    step=jax.jit(
      step,
      in_shardings=(shardings, batch_sharding),
      out_shardings=(shardings, whole),
      donate_argnums=0,
    ),
  )


class Placement(NamedTuple):
  """Where a pipeline stage's arrays live on the mesh (the module's docstring)."""

  mesh: jax.sharding.Mesh
  rules: tuple
  batch_axes: tuple
  gather_params: bool

  def shardings(self, tree):
    """A NamedSharding per leaf: by the first rule matching its path (checked against its
    shape, `spec_for`), whole where no rule matches."""

    def place(path, leaf):
      name = path_name(path)
      matched = any(re.search(pattern, name) for pattern, _ in self.rules)
      spec = spec_for(self.mesh, name, leaf.shape, self.rules) if matched else P()
      return NamedSharding(self.mesh, spec)

    return jax.tree_util.tree_map_with_path(place, tree)

  def state(self, tree):
    """`tree` (params, a stage's state) put on the mesh by `shardings`."""
    return jax.device_put(tree, self.shardings(tree))

  def create(self, fn, *args):
    """`fn(*args)` (an init) computed under jit straight into its placement, so a state
    larger than one device is never whole on one."""
    abstract = jax.eval_shape(fn, *args)
    return jax.jit(fn, out_shardings=self.shardings(abstract))(*args)

  def batch(self, tree):
    """Every leaf [B, ...] split over `batch_axes` on B; ValueError if B does not divide."""
    devices = _axis_size(self.mesh, self.batch_axes)
    for leaf in jax.tree.leaves(tree):
      if leaf.shape[0] % devices:
        raise ValueError(
          f"A batch of {leaf.shape[0]} rows does not split over the {devices} devices of "
          f"the mesh's {tuple(self.batch_axes)} axes: make the batch size a multiple of "
          f"{devices}, or change config.sharding.mesh."
        )
    return jax.device_put(tree, NamedSharding(self.mesh, P(tuple(self.batch_axes))))

  def model(self, model):
    """`model` whose apply, extend and unembed compute with whole weights when
    `gather_params` (fsdp) and constrain their outputs' batch over `batch_axes` (where
    it divides)."""
    whole = NamedSharding(self.mesh, P())
    devices = _axis_size(self.mesh, self.batch_axes)

    def gather(params):
      if not self.gather_params:
        return params
      return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, whole), params)

    def by_batch(x):
      if x.ndim == 0 or x.shape[0] % devices:
        return x
      spec = P(tuple(self.batch_axes), *([None] * (x.ndim - 1)))
      return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))

    def apply(params, tokens, mask, return_hidden: bool = False):
      return jax.tree.map(by_batch, model.apply(gather(params), tokens, mask, return_hidden))

    def extend(params, cache, tokens, mask):
      hidden, cache = model.extend(gather(params), cache, tokens, mask)
      return by_batch(hidden), cache

    def unembed(params, hidden):
      return by_batch(model.unembed(gather(params), hidden))

    return model._replace(apply=apply, extend=extend, unembed=unembed)

  def jit_step(self, step, state):
    """jit of `step` (state, ...) -> (state, metrics) whose new state keeps the shardings
    of `state`'s leaves and is donated."""
    keep = jax.tree.map(lambda x: x.sharding, state)
    return jax.jit(step, out_shardings=(keep, None), donate_argnums=0)


def make_placement(config, devices=None) -> Placement:
  """The Placement of a `sharding_config` section on a fresh mesh of `devices`."""
  return Placement(
    mesh=make_lm_mesh(config.mesh, devices),
    rules=tuple(config.rules),
    batch_axes=tuple(config.batch_axes),
    gather_params=bool(config.gather_params),
  )
