"""Independent references for how well a reward model learns a set of labels.

`linear_preference_accuracy` fits, in plain NumPy, a Bradley–Terry model whose reward is
linear in quadratic features of a step (obs, obs², action²: enough for a distance to a
target and a control cost), by gradient descent on the logistic loss. It shares no code
with rlhf_jax's reward model, so it tells what accuracy the labels allow, and a test can
ask our model to reach a share of the way from its untrained accuracy to this one,
instead of a threshold copied from one run's output.

`gpt2_forward` is GPT-2's forward pass written out in float64 NumPy on the tensors of a
checkpoint in Hugging Face's names and layout, for one unpadded sequence, one head at a
time: the language-model tests compare rlhf_jax.lm against it.

`tensorboard_scalars` reads the scalars of a directory's TensorBoard event files by the
TFRecord framing (length, CRC, Event proto, CRC) and the Event proto alone, without the
writer's code.
"""

import glob
import os
import struct

import numpy as np


def _segment_features(side: dict) -> np.ndarray:
  """Σ over each segment's unpadded steps of (obs, obs², action²): [P, F]."""
  obs, action = np.asarray(side["obs"], np.float64), np.asarray(side["action"], np.float64)
  steps = np.concatenate([obs, obs**2, action**2], axis=-1)
  return np.sum(steps * np.asarray(side["mask"])[..., None], axis=1)


def linear_preference_accuracy(first: dict, second: dict, labels, train, test) -> float:
  """Fits on the pairs `train` (index arrays into the [P, ...] fields of `first` and
  `second`, dicts of Segment fields); returns the accuracy on the strict labels (0 or 1)
  among the pairs `test`."""
  labels = np.asarray(labels, np.float64)
  x = _segment_features(first) - _segment_features(second)
  x = x / (x[train].std(axis=0) + 1e-6)
  weights = np.zeros(x.shape[1])
  for _ in range(3000):
    p_first = 1 / (1 + np.exp(-x[train] @ weights))
    gradient = x[train].T @ (p_first - labels[train]) / len(train) + 1e-3 * weights
    weights -= 0.1 * gradient
  strict = np.asarray(test)[labels[test] != 0.5]
  return float(np.mean((x[strict] @ weights > 0) == (labels[strict] > 0.5)))


def share_of_learnable_gap(accuracy: float, untrained: float, reference: float) -> float:
  """How far `accuracy` got from `untrained` toward `reference` (1: all the way)."""
  return (accuracy - untrained) / max(reference - untrained, 1e-6)


def bpref_get_label(r_first, r_second, beta, gamma, eps_mistake, thres_skip, thres_equal, rng):
  """B-Pref's `RewardModel.get_label` (rll-research/BPref, reward_model.py), read into plain
  NumPy and loops over queries, on per-step true rewards [P, K] (full segments).

  Returns (kept [P] bool, labels [P] of the kept queries in B-Pref's encoding: 1 when the
  second segment is preferred, 0 the first, -1 equally preferable). `beta <= 0` is the
  rational teacher, as in B-Pref; thresholds are the products ε × margin B-Pref stores.
  """
  r_first, r_second = np.asarray(r_first, np.float64), np.asarray(r_second, np.float64)
  kept = np.ones(len(r_first), bool)
  if thres_skip > 0:  # B-Pref skips only with a positive threshold
    for i in range(len(r_first)):
      kept[i] = max(r_first[i].sum(), r_second[i].sum()) > thres_skip
  labels = []
  for a, b in zip(r_first[kept], r_second[kept], strict=True):
    equal = abs(a.sum() - b.sum()) < thres_equal
    steps = len(a)
    weights = np.array([gamma ** (steps - 1 - t) for t in range(steps)])
    sum_a, sum_b = float(weights @ a), float(weights @ b)
    if beta > 0:
      p_second = np.exp(beta * sum_b) / (np.exp(beta * sum_a) + np.exp(beta * sum_b))
      label = int(rng.random() < p_second)
    else:
      label = int(sum_a < sum_b)
    if rng.random() <= eps_mistake:
      label = 1 - label
    labels.append(-1 if equal else label)
  return kept, np.array(labels, int)


def _layer_norm(x, scale, bias, epsilon=1e-5):
  mean = x.mean(axis=-1, keepdims=True)
  variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
  return (x - mean) / np.sqrt(variance + epsilon) * scale + bias


def _gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def gpt2_forward(tensors: dict, tokens, n_head: int):
  """GPT-2 on one sequence of token ids [T] (all real, positions 0..T-1), from tensors
  named as HF's GPT2Model (`wte.weight`, `h.0.attn.c_attn.weight` [D, 3D], ...).
  Returns (logits [T, V], hidden states after ln_f [T, D]), float64."""
  w = lambda name: np.asarray(tensors[name], np.float64)
  tokens = np.asarray(tokens)
  length = len(tokens)
  x = w("wte.weight")[tokens] + w("wpe.weight")[:length]
  width = x.shape[1]
  head_size = width // n_head
  future = np.triu(np.ones((length, length), bool), k=1)
  layer = 0
  while f"h.{layer}.ln_1.weight" in tensors:
    p = f"h.{layer}."
    h = _layer_norm(x, w(p + "ln_1.weight"), w(p + "ln_1.bias"))
    qkv = h @ w(p + "attn.c_attn.weight") + w(p + "attn.c_attn.bias")
    q, k, v = qkv[:, :width], qkv[:, width : 2 * width], qkv[:, 2 * width :]
    attended = np.zeros_like(x)
    for head in range(n_head):
      cols = slice(head * head_size, (head + 1) * head_size)
      scores = q[:, cols] @ k[:, cols].T / np.sqrt(head_size)
      scores[future] = -np.inf
      weights = np.exp(scores - scores.max(axis=1, keepdims=True))
      weights /= weights.sum(axis=1, keepdims=True)
      attended[:, cols] = weights @ v[:, cols]
    x = x + attended @ w(p + "attn.c_proj.weight") + w(p + "attn.c_proj.bias")
    h = _layer_norm(x, w(p + "ln_2.weight"), w(p + "ln_2.bias"))
    h = _gelu_tanh(h @ w(p + "mlp.c_fc.weight") + w(p + "mlp.c_fc.bias"))
    x = x + h @ w(p + "mlp.c_proj.weight") + w(p + "mlp.c_proj.bias")
    layer += 1
  hidden = _layer_norm(x, w("ln_f.weight"), w("ln_f.bias"))
  return hidden @ w("wte.weight").T, hidden


def tensorboard_scalars(directory: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} in file and write order, of every event file there."""
  from tensorboardX.proto import event_pb2

  scalars = {}
  for path in sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*"))):
    with open(path, "rb") as file:
      content = file.read()
    offset = 0
    while offset < len(content):
      (length,) = struct.unpack("<Q", content[offset : offset + 8])
      event = event_pb2.Event.FromString(content[offset + 12 : offset + 12 + length])
      offset += 12 + length + 4
      for value in event.summary.value:
        scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
  return scalars
