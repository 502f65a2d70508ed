"""A person labels the LM pipeline's pairs of completions (`comparisons.teacher = "human"`).

  queue  pairs go into <workdir>/labels.sqlite, the labeling app's store
         (`labeling/store.py`), as text pairs under a name: segments <name><i>a and
         <name><i>b hold the prompt and one completion each. The comparisons stage
         queues its pairs as "c"; the online stage each round's as "online<step>_".
         Queuing is idempotent: a resumed run finds its pairs there and asks nothing twice
  wait   the pipeline polls the store until each of those pairs is answered, saying how
         many are left; `python -m rlhf_jax.label --workdir=<workdir>` shows each pair as
         the prompt and two completions side by side (the same keys, undo and label list
         as for clips)
  read   left: the first completion preferred (label 1); right: the second (0); equal: a
         tie (0.5); skip: no label

Labels live in the store's transactions, so the pipeline and the app can each be stopped
and restarted at any time without losing one.
"""

import time
from collections.abc import Callable

import numpy as np

from rlhf_jax.labeling.store import LABEL_OF_CHOICE, Store


def queued(store: Store, name: str, count: int) -> list[int] | None:
  """The ids of pairs <name>0 .. <name>{count-1} when all are queued, else None."""
  ids = store.pair_ids([f"{name}{i}a" for i in range(count)])
  return None if None in ids else ids


def queue(store: Store, name: str, prompts, firsts, seconds) -> list[int]:
  """Queues pair i (prompts[i]; firsts[i] left, seconds[i] right) as <name>i, unless it
  is there already. Returns the pairs' ids in order."""
  ids = queued(store, name, len(prompts))
  if ids is not None:
    return ids
  text = lambda prompt, completion: {"prompt": np.array(prompt), "completion": np.array(completion)}
  pairs = [
    (f"{name}{i}a", text(prompt, first), f"{name}{i}b", text(prompt, second))
    for i, (prompt, first, second) in enumerate(zip(prompts, firsts, seconds, strict=True))
  ]
  store.set_meta({"kind": "text"})
  return store.add_pairs(pairs, env_steps=0, clips_ready=True)


def wait(
  store: Store, pair_ids: list[int], poll_seconds: float, log: Callable, sleep=time.sleep
) -> dict[int, str]:
  """Returns {pair id: choice} once each pair is answered; says how many wait when that
  changes."""
  said = None
  while len(answered := store.choices(pair_ids)) < len(pair_ids):
    waiting = len(pair_ids) - len(answered)
    if waiting != said:
      log(f"human labels: {waiting} pairs wait to be labelled in the app")
      said = waiting
    sleep(poll_seconds)
  return answered


def labels(choices: dict[int, str], pair_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
  """(labels [P]: P(first ≻ second), valid [P]: False for a skip) of the pairs, in order,
  as `teachers.label` gives a simulated teacher's."""
  label = [LABEL_OF_CHOICE.get(choices[i], 0.5) for i in pair_ids]
  valid = [choices[i] != "skip" for i in pair_ids]
  return np.array(label, np.float32), np.array(valid)


def comparisons(store: Store, pair_ids: list[int]) -> list[dict]:
  """The answered pairs as comparisons.jsonl rows, in order; skipped pairs left out."""
  answered = {row["pair_id"]: row for row in store.labelled_pairs()}
  rows = []
  for pair_id in pair_ids:
    pair = answered[pair_id]
    if pair["choice"] == "skip":
      continue
    first, second = pair["first"], pair["second"]
    chosen, rejected = (second, first) if pair["choice"] == "right" else (first, second)
    rows.append(
      {
        "prompt": str(first["prompt"]),
        "chosen": str(chosen["completion"]),
        "rejected": str(rejected["completion"]),
        "tie": pair["choice"] == "equal",
      }
    )
  return rows
