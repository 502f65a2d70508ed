"""GPT-2 checkpoints in Hugging Face's format, to and from our parameters (host side).

A checkpoint is a local directory with `config.json` and `model.safetensors`, as the
GPT-2 repositories on the Hugging Face hub hold them; nothing is ever downloaded. Its
tensors are named as HF's `GPT2Model`, optionally prefixed with `transformer.` (as
`GPT2LMHeadModel` saves them):

  wte.weight [V, D]            -> wte/embedding       (also the unembedding: tied)
  wpe.weight [P, D]            -> wpe/embedding
  h.{i}.ln_1.weight, .bias     -> h_{i}/ln_1/scale, bias
  h.{i}.attn.c_attn.weight [D, 3D], .bias  -> h_{i}/attn/c_attn/kernel, bias
  h.{i}.attn.c_proj.weight [D, D], .bias   -> h_{i}/attn/c_proj/kernel, bias
  h.{i}.ln_2.weight, .bias     -> h_{i}/ln_2/scale, bias
  h.{i}.mlp.c_fc.weight [D, 4D], .bias     -> h_{i}/mlp/c_fc/kernel, bias
  h.{i}.mlp.c_proj.weight [4D, D], .bias   -> h_{i}/mlp/c_proj/kernel, bias
  ln_f.weight, .bias           -> ln_f/scale, bias

HF's Conv1D stores its weight as [in, out] (y = x @ W + b), the layout of a Flax Dense
kernel, so no tensor is transposed. The causal-mask buffers `h.{i}.attn.bias` and
`h.{i}.attn.masked_bias` that older files carry are skipped, and so is `lm_head.weight`
when it equals `wte.weight` (an untied head is an error). `config.json` gives the sizes
(`vocab_size`, `n_positions`, `n_embd`, `n_layer`, `n_head`); a file that asks for
something this model does not do (another LayerNorm epsilon or activation, an inner MLP
width other than 4D) is refused. Tensors are read as NumPy arrays (float32 and float16
files; bfloat16 needs NumPy support that safetensors.numpy may lack).
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file, save_file

from rlhf_jax.lm.model import LAYER_NORM_EPSILON, GPTConfig, make_model

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PREFIX = "transformer."
_SIZE_KEYS = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")
_BUFFERS = (".attn.bias", ".attn.masked_bias")  # constant causal masks, not parameters


def tensor_paths(config: GPTConfig) -> dict[str, tuple[str, ...]]:
  """Each HF tensor name -> the path of our parameter that holds it."""
  paths = {"wte.weight": ("wte", "embedding"), "wpe.weight": ("wpe", "embedding")}
  norm = lambda hf, ours: {f"{hf}.weight": (*ours, "scale"), f"{hf}.bias": (*ours, "bias")}
  dense = lambda hf, ours: {f"{hf}.weight": (*ours, "kernel"), f"{hf}.bias": (*ours, "bias")}
  for layer in range(config.n_layer):
    hf, ours = f"h.{layer}", f"h_{layer}"
    paths |= norm(f"{hf}.ln_1", (ours, "ln_1"))
    paths |= dense(f"{hf}.attn.c_attn", (ours, "attn", "c_attn"))
    paths |= dense(f"{hf}.attn.c_proj", (ours, "attn", "c_proj"))
    paths |= norm(f"{hf}.ln_2", (ours, "ln_2"))
    paths |= dense(f"{hf}.mlp.c_fc", (ours, "mlp", "c_fc"))
    paths |= dense(f"{hf}.mlp.c_proj", (ours, "mlp", "c_proj"))
  return paths | norm("ln_f", ("ln_f",))


def _expected_shapes(config: GPTConfig):
  """Our parameter tree of ShapeDtypeStructs (no memory allocated)."""
  return jax.eval_shape(make_model(config).init, jax.random.PRNGKey(0))


def _get(tree, path):
  for name in path:
    tree = tree[name]
  return tree


def _strip_prefix(tensors: dict) -> dict:
  return {name.removeprefix(PREFIX): value for name, value in tensors.items()}


def params_from_gpt2(tensors: dict, config: GPTConfig):
  """Our params from HF-named tensors ({name: array}); ValueError for a missing,
  unexpected or misshapen tensor, naming it (and both shapes)."""
  tensors = _strip_prefix(tensors)
  paths = tensor_paths(config)
  head = tensors.pop("lm_head.weight", None)
  if head is not None and not (
    "wte.weight" in tensors and np.array_equal(np.asarray(head), np.asarray(tensors["wte.weight"]))
  ):
    raise ValueError("lm_head.weight differs from wte.weight; only tied unembeddings load.")
  missing = sorted(set(paths) - set(tensors))
  if missing:
    raise ValueError(f"The checkpoint lacks {len(missing)} tensor(s): {', '.join(missing)}.")
  unexpected = sorted(name for name in set(tensors) - set(paths) if not name.endswith(_BUFFERS))
  if unexpected:
    raise ValueError(
      f"The checkpoint has tensor(s) this model does not use: {', '.join(unexpected)}."
    )
  expected = _expected_shapes(config)
  hf_names = {path: name for name, path in paths.items()}

  def take(path, spec):
    name = hf_names[path]
    value = np.asarray(tensors[name])
    if value.shape != spec.shape:
      raise ValueError(
        f"Tensor {name} has shape {value.shape}; the model's {'/'.join(path)} needs {spec.shape}."
      )
    return jnp.asarray(value, spec.dtype)

  return jax.tree_util.tree_map_with_path(
    lambda keys, spec: take(tuple(key.key for key in keys), spec), expected
  )


def gpt2_from_params(params, config: GPTConfig) -> dict[str, np.ndarray]:
  """HF-named float32 NumPy tensors of our params (no prefix, no buffers, no lm_head)."""
  return {
    name: np.ascontiguousarray(np.asarray(_get(params, path), np.float32))
    for name, path in tensor_paths(config).items()
  }


def config_from_json(fields: dict) -> GPTConfig:
  """A GPTConfig from the fields of an HF GPT-2 `config.json`."""
  missing = [key for key in _SIZE_KEYS if key not in fields]
  if missing:
    raise ValueError(f"config.json lacks {', '.join(missing)}.")
  epsilon = fields.get("layer_norm_epsilon", LAYER_NORM_EPSILON)
  if not np.isclose(epsilon, LAYER_NORM_EPSILON, rtol=1e-3, atol=0):
    raise ValueError(f"config.json has layer_norm_epsilon={epsilon}; the model uses 1e-5.")
  activation = fields.get("activation_function", "gelu_new")
  if activation != "gelu_new":
    raise ValueError(
      f"config.json has activation_function={activation!r}; the model uses gelu_new."
    )
  inner = fields.get("n_inner")
  if inner is not None and inner != 4 * fields["n_embd"]:
    raise ValueError(f"config.json has n_inner={inner}; the model's MLP is 4 x n_embd wide.")
  return GPTConfig(**{key: int(fields[key]) for key in _SIZE_KEYS})


def config_to_json(config: GPTConfig) -> dict:
  """The fields of an HF GPT-2 `config.json` for `config`."""
  return {
    "model_type": "gpt2",
    "architectures": ["GPT2LMHeadModel"],
    **{key: getattr(config, key) for key in _SIZE_KEYS},
    "n_ctx": config.n_positions,
    "n_inner": None,
    "activation_function": "gelu_new",
    "layer_norm_epsilon": LAYER_NORM_EPSILON,
    "tie_word_embeddings": True,
  }


def _require(path: str, what: str):
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f"No {what} at {path}; a GPT-2 checkpoint directory holds {CONFIG_FILE} and {WEIGHTS_FILE}."
    )


def load_gpt2(directory: str, dtype=jnp.float32):
  """(GPTConfig with `dtype`, params) from a local checkpoint directory."""
  config_path = os.path.join(directory, CONFIG_FILE)
  weights_path = os.path.join(directory, WEIGHTS_FILE)
  _require(config_path, "model config")
  _require(weights_path, "weights file")
  with open(config_path, encoding="utf-8") as file:
    config = config_from_json(json.load(file))._replace(dtype=dtype)
  return config, params_from_gpt2(load_file(weights_path), config)


def save_gpt2(directory: str, config: GPTConfig, params) -> None:
  """Writes `config.json` and `model.safetensors` (float32, unprefixed names, as the
  GPT-2 hub files) into `directory`, creating it if needed."""
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, CONFIG_FILE), "w", encoding="utf-8") as file:
    json.dump(config_to_json(config), file, indent=2)
  # "format": "pt" says the layout is PyTorch's (Conv1D [in, out]); HF's loader checks it.
  save_file(
    gpt2_from_params(params, config), os.path.join(directory, WEIGHTS_FILE), {"format": "pt"}
  )
