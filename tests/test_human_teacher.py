"""teacher=human: a script plays the person through the app's HTTP API while a run trains."""

import io
import os
import signal
import threading
import time

import numpy as np
import pytest

from rlhf_jax import loop, reward_model, train
from rlhf_jax.labeling import app as labeling_app
from rlhf_jax.labeling.human import stack_rows
from rlhf_jax.labeling.scripted import ScriptedPerson, free_port
from rlhf_jax.labeling.store import LABEL_OF_CHOICE, Store
from tests.references import linear_preference_accuracy, share_of_learnable_gap
from tests.test_checkpoint import interrupt_after
from tests.test_labeling_app import start_server
from tests.test_loop import tiny_pref_config


def human_config():
  config = tiny_pref_config()
  # Reacher: its reward (distance to the target) makes the untrained model's ranking a coin
  # flip, while inverted_pendulum's (1 per step alive) any positive reward ranks rightly.
  config.env.name = "reacher"
  config.reward.initial_train_steps = 200
  config.reward.train_steps = 20
  config.teacher = "human"
  config.human.wait = True
  config.human.grace_seconds = 0.0
  config.human.poll_seconds = 0.05
  config.queries.total_labels = 40
  config.total_env_steps = 4 * config.iterations_per_chunk * 8 * 2 * 5  # four chunks
  return config


class Person(threading.Thread):
  """The scripted person on a thread, with the app in a subprocess restarted once."""

  def __init__(self, workdir: str, restart_after: int):
    super().__init__(daemon=True)
    self.workdir, self.restart_after = workdir, restart_after
    self.port = free_port()
    self.server = start_server(workdir, self.port)
    self.person = ScriptedPerson(workdir, f"http://127.0.0.1:{self.port}", client="person")
    self.stop, self.restarted, self.errors = threading.Event(), False, []

  def run(self):
    try:
      while not self.stop.is_set():
        if not self.person.label_one():
          time.sleep(0.05)
        elif self.person.given == self.restart_after:  # the app goes down and comes back
          self.server.kill()
          self.server.wait()
          self.server = start_server(self.workdir, self.port)
          self.restarted = True
    except Exception as error:  # noqa: BLE001 (any failure: stop the run, report it)
      self.errors.append(error)
      os.kill(os.getpid(), signal.SIGTERM)  # the run stops waiting, saves and raises
    finally:
      self.server.kill()
      self.server.wait()


def ensemble_accuracy(trainer, state, rows) -> float:
  """The trained run's ensemble on the person's strict labels."""
  rows = [r for r in rows if r["label"] in (0.0, 1.0)]
  first = stack_rows([r["first"] for r in rows], len(rows))
  second = stack_rows([r["second"] for r in rows], len(rows))
  labels = np.array([r["label"] for r in rows])
  model, rm_state = trainer.preferences.model, state.preferences.reward_model
  return reward_model.ensemble_accuracy(model, rm_state, first, second, labels)


def test_a_person_through_the_api_teaches_the_reward_model(tmp_path):
  workdir = str(tmp_path / "run")
  config = human_config()
  person = Person(workdir, restart_after=15)
  person.start()
  try:
    result = train.train(config, workdir)
  except train.Interrupted:
    pass  # by the person's failure, reported below
  finally:
    person.stop.set()
    person.join(timeout=60)
  assert not person.errors and person.restarted
  store = Store(labeling_app.store_path(workdir))
  labels = store.labels()
  # Every label given was used, in the chunk it arrived by; none is lost or doubled.
  assert len(labels) == store.counts()["pairs"] == config.queries.total_labels
  assert all(r["ingested_chunk"] is not None for r in labels)
  assert result.records[-1]["labels_used"] == len(labels)
  assert result.records[-1]["queries_asked"] == len(labels)

  # The reward model, untrained at first, ranks the person's pairs as the person did.
  store.forget_ingested_after(-1)
  rows = store.take_labels(chunk=0)
  assert {r["choice"] for r in rows} <= set(LABEL_OF_CHOICE)
  trainer = result.trainer
  untrained = trainer.init(loop.seed_keys(config))
  before = ensemble_accuracy(trainer, untrained, rows)
  after = ensemble_accuracy(trainer, result.state, rows)
  # Against a NumPy Bradley-Terry fit to the same labels (tests/references.py).
  strict = [r for r in rows if r["label"] in (0.0, 1.0)]
  side = lambda name: {f: np.stack([r[name][f] for r in strict]) for f in ("obs", "action", "mask")}  # noqa: E731
  everything = np.arange(len(strict))
  labels = [r["label"] for r in strict]
  reference = linear_preference_accuracy(
    side("first"), side("second"), labels, everything, everything
  )
  print(
    f"accuracy on the person's labels: untrained {before:.3f}, trained {after:.3f}, "
    f"NumPy reference {reference:.3f}"
  )
  assert share_of_learnable_gap(after, before, reference) >= 0.5, (before, after, reference)


def test_asynchronous_labels_flow_in_while_training_goes_on(tmp_path):
  """human.wait=False: the run never waits; labels arriving mid-run are taken in."""
  workdir = str(tmp_path / "run")
  config = human_config()
  config.human.wait = False
  config.total_env_steps = 8 * config.iterations_per_chunk * 8 * 2 * 5  # eight chunks
  person = Person(workdir, restart_after=-1)
  original = person.person.label_one

  def slowly():
    labelled = original()
    time.sleep(0.3 if labelled else 0.0)
    return labelled

  person.person.label_one = slowly

  class Unhurried(io.StringIO):  # the run's log: each line (one a chunk) takes 0.3 s, so
    def write(self, text):  # that labels arrive between chunks however fast they train
      time.sleep(0.3 if text.strip() else 0.0)
      return super().write(text)

  person.start()
  try:
    result = train.train(config, workdir, stream=Unhurried())
  finally:
    person.stop.set()
    person.join(timeout=60)
  assert not person.errors
  used = [record["labels_used"] for record in result.records]
  assert used == sorted(used) and 0 < used[-1] <= config.queries.total_labels
  assert len(set(used)) > 2  # labels arrived across the run, not in one batch
  store = Store(labeling_app.store_path(workdir))
  taken = [r for r in store.labels() if r["ingested_chunk"] is not None]
  # Every label taken in, the last ones after the final chunk too, is in the final state.
  assert len(taken) == int(result.state.preferences.labels_used) >= used[-1]


def test_a_signal_while_waiting_for_the_first_labels_stops_before_any_chunk(tmp_path):
  """Nobody labels; SIGTERM while the run waits: it stops at once, trains no chunk, saves
  nothing, and the queued pairs stay in the store for the rerun."""
  workdir = str(tmp_path / "run")
  config = human_config()
  store = Store(labeling_app.store_path(workdir))

  def stop_once_queued():
    while store.counts()["pairs"] == 0:
      time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)

  threading.Thread(target=stop_once_queued, daemon=True).start()
  with pytest.raises(train.Interrupted, match="before chunk 1 of 4"):
    train.train(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert f.read() == ""
  assert os.listdir(os.path.join(workdir, "checkpoints")) == []
  assert store.counts()["waiting"] == store.counts()["pairs"] > 0


@pytest.mark.slow  # two runs, about 40 s; the store's side is tested by default
def test_resume_takes_again_the_labels_its_checkpoint_lacks(tmp_path, monkeypatch):
  """Stopped after chunk 2, then (as if a run had died before its next save) labels
  marked as used after it: the resumed run takes them again; none is lost or doubled."""
  workdir = str(tmp_path / "run")
  config = human_config()
  config.checkpoint.every_chunks = 1
  person = Person(workdir, restart_after=-1)
  person.start()
  try:
    interrupt_after(monkeypatch, 2)
    with pytest.raises(train.Interrupted):
      train.train(config, workdir)
    monkeypatch.undo()
    store = Store(labeling_app.store_path(workdir))
    while store.counts()["unused"] == 0:  # a label given after the stop ...
      time.sleep(0.05)
    assert store.take_labels(chunk=3)  # ... taken by a run that died before checkpoint 3
    result = train.train(config, workdir)
  finally:
    person.stop.set()
    person.join(timeout=60)
  assert not person.errors
  labels = store.labels()
  assert len(labels) == config.queries.total_labels
  assert int(result.state.preferences.labels_used) == len(labels)
  assert int(result.state.preferences.preferences.size) == len(labels)
