"""A person labels the LM pipeline's comparisons (`comparisons.teacher = "human"`).

  queue  the pairs of SFT completions go into <workdir>/labels.sqlite, the labeling app's
         store (`labeling/store.py`), as text pairs: segments c<i>a and c<i>b holding the
         prompt and one completion each; queued once, so a rerun finds them there
  wait   the pipeline polls the store until no pair waits, saying how many are left;
         `python -m rlhf_jax.label --workdir=<workdir>` shows each pair as the prompt and
         two completions side by side (the same keys, undo and label list as for clips)
  read   left: the first completion chosen; right: the second; equal: a tie; skip: dropped

Labels live only in the store until the wait ends, so the pipeline and the app can each
be stopped and restarted at any time without losing one (the store's transactions).
"""

import time
from collections.abc import Callable

import numpy as np

from rlhf_jax.labeling.store import Store


def queue_pairs(store: Store, prompts, firsts, seconds) -> int:
  """Queues pair i (prompts[i]; firsts[i] left, seconds[i] right) unless the store holds
  pairs already. Returns the number of pairs in the store."""
  if store.counts()["pairs"]:
    return store.counts()["pairs"]
  text = lambda prompt, completion: {"prompt": np.array(prompt), "completion": np.array(completion)}
  pairs = [
    (f"c{i}a", text(prompt, first), f"c{i}b", text(prompt, second))
    for i, (prompt, first, second) in enumerate(zip(prompts, firsts, seconds, strict=True))
  ]
  store.set_meta({"kind": "text"})
  store.add_pairs(pairs, env_steps=0, clips_ready=True)
  return len(pairs)


def wait_for_labels(
  store: Store, poll_seconds: float, log: Callable, sleep: Callable = time.sleep
) -> None:
  """Returns once every queued pair is answered; says how many wait when that changes."""
  said = None
  while (waiting := store.counts()["waiting"]) > 0:
    if waiting != said:
      log(f"human labels: {waiting} pairs wait to be labelled in the app")
      said = waiting
    sleep(poll_seconds)


def comparisons(store: Store) -> list[dict]:
  """The answered pairs as comparisons.jsonl rows, in pair order; skipped pairs left out."""
  rows = []
  for pair in store.labelled_pairs():
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
