"""A person as the teacher: the trainer's side of `config.teacher = "human"`.

Between chunks the host (rlhf_jax/train.py) calls `after_chunk`, which

  1. queues the pairs due by the end of the next chunk in the label store, so the app can
     render them ahead: the trainer's `propose` picks them by the query method from the
     segment buffer, on the device;
  2. ingests the labels that arrived since (older than `human.grace_seconds`, so a fresh
     one can still be undone) into the preference buffer with the trainer's `ingest`.

The reward model keeps training, each iteration, on the labels it has; with
`human.wait = True` the host instead waits until every queued pair is answered. The first
labels to arrive also get `reward.initial_train_steps` steps of fitting, as the simulated
teacher's initial labels do.

The store is the only link to the app, so either may restart. On resume from the
checkpoint of chunk c, labels ingested after chunk c are marked new again (that
checkpoint's buffer lacks them) and are ingested anew.
"""

import time
import uuid

import jax
import numpy as np

from rlhf_jax.labeling import app, render
from rlhf_jax.labeling.store import Store
from rlhf_jax.types import Segment

INGEST_BATCH = 64  # labels per `ingest` call (padded; at most queries.buffer_size)
PROPOSE_MULTIPLE = 16  # pairs are proposed in multiples of this: few compiled shapes


def segment_rows(batch: Segment) -> list[dict]:
  """[P, K, ...] segments on the device -> P dicts of NumPy arrays (one per segment)."""
  batch = jax.device_get(batch)
  return [
    {name: np.asarray(getattr(batch, name)[i]) for name in Segment._fields}
    for i in range(batch.mask.shape[0])
  ]


def stack_rows(rows: list[dict], size: int) -> Segment:
  """P dicts -> Segment [size, K, ...], padded with copies of the first row."""
  padded = rows + [rows[0]] * (size - len(rows))
  return Segment(*(np.stack([row[name] for row in padded]) for name in Segment._fields))


class HumanTeacher:
  def __init__(self, config, trainer, workdir: str, log):
    self.config, self.trainer, self.log = config, trainer, log
    self.store = Store(app.store_path(workdir))
    self.store.set_meta(render.clip_meta(config, trainer))
    # Labels due after i iterations: the initial ones, then the schedule's.
    self.prefs = trainer.preferences
    schedule = np.concatenate([[0], np.cumsum(self.prefs.label_schedule)])
    initial = np.full(len(schedule), self.prefs.num_initial_labels)
    if self.prefs.initial_iteration is not None:  # after pre-training (PEBBLE)
      initial[: self.prefs.initial_iteration + 1] = 0
    self.due_after = initial + schedule
    self.key = jax.random.PRNGKey(config.seed)
    self.workdir = workdir
    self.stop_requested = lambda: False  # while True, waiting for labels ends early

  def start(self, state, chunk: int, resumed: bool):
    """Before the first chunk (of a fresh run, or after resuming from checkpoint `chunk`).

    A label's `ingested_chunk` is the first checkpoint that holds it: labels taken after
    chunk c are in checkpoint c (saved right after), labels taken here are not in the
    checkpoint resumed from, only in the next. Whatever this state lacks is taken again.
    """
    again = self.store.forget_ingested_after(chunk if resumed else -1)
    if again:
      self.log(f"human labels: {again} labels not in this state will be used again")
    self.log(
      f"human teacher: label in the app, `python -m rlhf_jax.label --workdir={self.workdir}`"
    )
    return self.after_chunk(state, chunk, mark=chunk + 1)

  def after_chunk(self, state, chunks_done: int, last: bool = False, mark: int | None = None):
    """Queues the pairs due by the end of the next chunk and takes in new labels, marked
    as held from checkpoint `mark` (default `chunks_done`) on. After the `last` chunk it
    only takes in what has arrived, for the final checkpoint."""
    mark = chunks_done if mark is None else mark
    if last:
      return self._ingest(state, mark)
    iterations = (chunks_done + 1) * self.config.iterations_per_chunk
    due = int(self.due_after[min(iterations, len(self.due_after) - 1)])
    queued = self.store.counts()["pairs"]
    if due > queued:
      method = self.prefs.query_method(int(state.preferences.labels_used))
      self._queue(state, chunks_done, queued, due - queued, method)
    if self.config.human.wait:
      return self._wait_and_ingest(state, mark)
    return self._ingest(state, mark)

  def _queue(self, state, chunk: int, queued: int, count: int, method: str) -> None:
    """Proposes `count` pairs after the `queued` ones and puts them in the store."""
    size = -(-count // PROPOSE_MULTIPLE) * PROPOSE_MULTIPLE
    key = jax.random.fold_in(jax.random.fold_in(self.key, chunk), queued)
    first, second = self.trainer.propose(state, key, size, method)
    first, second = segment_rows(first)[:count], segment_rows(second)[:count]
    env_steps = self.trainer.initial_env_steps + chunk * self.steps_per_chunk
    pairs = [(uuid.uuid4().hex, a, uuid.uuid4().hex, b) for a, b in zip(first, second, strict=True)]
    self.store.add_pairs(pairs, env_steps)
    self.log(f"human labels: queued {count} pairs ({method})")

  @property
  def steps_per_chunk(self) -> int:
    return self.trainer.env_steps_per_iteration * self.config.iterations_per_chunk

  def _ingest(self, state, chunk: int):
    rows = self.store.take_labels(chunk, older_than=self.config.human.grace_seconds)
    if not rows:
      return state
    before = int(state.preferences.labels_used)
    size = min(INGEST_BATCH, self.config.queries.buffer_size)
    for start in range(0, len(rows), size):
      batch = rows[start : start + size]
      first = stack_rows([r["first"] for r in batch], size)
      second = stack_rows([r["second"] for r in batch], size)
      given = [r["label"] is not None for r in batch]  # a skip is asked, not kept
      labels = np.zeros(size, np.float32)
      labels[: len(batch)] = [r["label"] if g else 0.5 for r, g in zip(batch, given, strict=True)]
      asked = np.arange(size) < len(batch)
      keep = np.zeros(size, bool)
      keep[: len(batch)] = given
      key = jax.random.fold_in(self.key, 1_000_000 + batch[0]["pair_id"])
      state = self.trainer.ingest(state, key, first, second, labels, asked, keep)
    counts = self.store.counts()
    self.log(
      f"human labels: +{len(rows)} ({int(state.preferences.labels_used)} used in training, "
      f"{counts['waiting']} waiting)"
    )
    # As with a simulated teacher: a long first fit once the initial labels are in.
    steps = self.prefs.initial_fit_steps(before, int(state.preferences.labels_used))
    if steps:
      state, metrics = self.trainer.fit(state, jax.random.fold_in(self.key, 2**31 - 1), steps)
      self.log(
        f"human labels: first fit, {steps} steps, training accuracy "
        f"{float(metrics['rm_train_accuracy']):.2f}"
      )
    return state

  def _wait_and_ingest(self, state, chunk: int):
    """Waits until every queued pair is answered, then ingests them all at once (so the
    same answers give the same run, however fast they came)."""
    last_said = 0.0
    while True:
      counts = self.store.counts()
      if counts["waiting"] == 0 or self.stop_requested():
        state = self._ingest(state, chunk)
        if self.store.counts()["unused"] == 0 or self.stop_requested():
          return state
      elif time.monotonic() - last_said > 30:
        self.log(f"human labels: waiting for {counts['waiting']} pairs to be labelled")
        last_said = time.monotonic()
      time.sleep(self.config.human.poll_seconds)
