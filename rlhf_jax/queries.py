"""Which pairs to ask the teacher about, and how many labels to ask for when.

Selection (pure, jittable): score a pool of candidate pairs and keep the best `num`:
  uniform       random scores
  disagreement  variance over the ensemble members of P_m(first ≻ second)  (the paper's)
  entropy       binary entropy of the ensemble's mean P(first ≻ second)

and B-Pref's coverage methods (Lee et al. 2021), which need no scores but the pairs'
observations: `kcenter` picks, greedily, the candidate farthest (Euclidean, on both
segments' observations flattened) from every labelled pair and every pair picked so far;
`kcenter_disagreement` and `kcenter_entropy` first keep the half of the pool that scores
highest, then pick from that half by kcenter.

Schedule (host side, computed once from the config): cumulative labels due by the end of
each iteration. A fraction `initial_fraction` of the budget is asked about segments of the
random initial policy before PPO starts; the rest arrives at a rate ∝ τ / (T + τ) in env
steps T ("paper", τ = 2·10⁶ by default) or at a constant rate ("constant"), so that the
whole budget is used by the run's last iteration.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

METHODS = (
  "uniform",
  "disagreement",
  "entropy",
  "kcenter",
  "kcenter_disagreement",
  "kcenter_entropy",
)
KCENTER = {"kcenter": None, "kcenter_disagreement": "disagreement", "kcenter_entropy": "entropy"}
SCHEDULES = ("paper", "constant")


def scores(method: str, key, returns_first, returns_second) -> jax.Array:
  """Scores pairs from the members' segment returns ([M, C] each); higher is asked first."""
  p_first = jax.nn.sigmoid(returns_first - returns_second)  # [M, C]
  if method == "disagreement":
    return jnp.var(p_first, axis=0)
  if method == "entropy":
    p = jnp.clip(jnp.mean(p_first, axis=0), 1e-6, 1 - 1e-6)
    return -(p * jnp.log(p) + (1 - p) * jnp.log1p(-p))
  if method == "uniform":
    return jax.random.uniform(key, p_first.shape[1:])
  raise ValueError(f"Unknown query method {method!r}; choose one of {', '.join(METHODS)}.")


def select(method: str, key, returns_first, returns_second, num: int) -> jax.Array:
  """Indices [num] of the candidates to ask about, best first."""
  return jax.lax.top_k(scores(method, key, returns_first, returns_second), num)[1]


def kcenter(candidates, labelled, labelled_valid, num: int) -> jax.Array:
  """Indices [num] of `candidates` [C, F], in the order greedy k-center picks them: each
  time the one whose distance to the nearest of the valid rows of `labelled` [P, F]
  (`labelled_valid` [P]) and of the candidates picked before is largest."""
  squared = lambda a, b: (  # noqa: E731  [A, B]
    jnp.sum(a * a, -1)[:, None] + jnp.sum(b * b, -1)[None, :] - 2.0 * a @ b.T
  )
  far = jnp.where(labelled_valid[None, :], squared(candidates, labelled), jnp.inf)
  nearest = jnp.min(far, axis=1, initial=jnp.inf)  # [C]; inf where nothing is labelled

  def pick(i, carry):
    nearest, chosen = carry
    best = jnp.argmax(nearest)
    to_best = squared(candidates, candidates[best][None])[:, 0]
    nearest = jnp.minimum(nearest, to_best).at[best].set(-jnp.inf)  # never again
    return nearest, chosen.at[i].set(best)

  chosen = jnp.zeros((num,), jnp.int32)
  return jax.lax.fori_loop(0, num, pick, (nearest, chosen))[1]


def initial_labels(total_labels: int, initial_fraction: float) -> int:
  return int(round(total_labels * initial_fraction))


def label_schedule(
  total_labels: int,
  initial_fraction: float,
  schedule: str,
  timescale: float,
  steps_per_iteration: int,
  num_iterations: int,
) -> np.ndarray:
  """Labels to ask for in each iteration, int [num_iterations], after the initial ones."""
  if schedule not in SCHEDULES:
    raise ValueError(f"Unknown label schedule {schedule!r}; choose one of {SCHEDULES}.")
  initial = initial_labels(total_labels, initial_fraction)
  rest = total_labels - initial

  def spent(env_steps):  # ∫_0^T of the rate, in arbitrary units
    return math.log1p(env_steps / timescale) if schedule == "paper" else float(env_steps)

  end = spent(num_iterations * steps_per_iteration)
  cumulative = [
    math.floor(rest * spent((i + 1) * steps_per_iteration) / end + 1e-9)
    for i in range(num_iterations)
  ]
  return np.diff(np.asarray([0] + cumulative, dtype=np.int64)).astype(np.int32)
