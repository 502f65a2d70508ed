"""Independent references for how well a reward model learns a set of labels.

`linear_preference_accuracy` fits, in plain NumPy, a Bradley–Terry model whose reward is
linear in quadratic features of a step (obs, obs², action²: enough for a distance to a
target and a control cost), by gradient descent on the logistic loss. It shares no code
with rlhf_jax's reward model, so it tells what accuracy the labels allow, and a test can
ask our model to reach a share of the way from its untrained accuracy to this one,
instead of a threshold copied from one run's output.
"""

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
