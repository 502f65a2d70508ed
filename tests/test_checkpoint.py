"""Checkpoints, exact resume, signals and the NaN guard."""

import os
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax import checkpoint, loop, metrics, train
from rlhf_jax import config as config_lib
from tests.test_loop import (
  REPO,
  _deterministic,
  tiny_config,
  tiny_pref_config,
  tiny_sac_pref_config,
)

NUM_CHUNKS = 4


def four_chunks(make_config=tiny_pref_config):
  config = make_config()
  config.total_env_steps = NUM_CHUNKS * config.iterations_per_chunk * 8 * 2 * 5
  config.checkpoint.every_chunks = 1
  return config


def assert_same_arrays(a, b):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b, strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def interrupt_after(monkeypatch, chunks: int, signum=signal.SIGTERM):
  """Sends `signum` to this process while the `chunks`-th chunk is being summarized."""
  summary = loop.chunk_summary
  calls = []

  def summary_then_signal(chunk_metrics):
    calls.append(1)
    if len(calls) == chunks:
      os.kill(os.getpid(), signum)
    return summary(chunk_metrics)

  monkeypatch.setattr(loop, "chunk_summary", summary_then_signal)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """The reference: four chunks of the preference loop without a stop."""
  return train.train(four_chunks(), str(tmp_path_factory.mktemp("straight")))


def test_sigterm_saves_and_resume_is_bitwise_identical(tmp_path, monkeypatch, straight):
  workdir = str(tmp_path / "run")
  config = four_chunks()
  config.checkpoint.every_chunks = 10  # only the signal makes it save
  interrupt_after(monkeypatch, 2)
  with pytest.raises(train.Interrupted, match="stopped by SIGTERM after chunk 2 of 4"):
    train.train(config, workdir)
  assert checkpoint.Checkpointer(workdir, 3).steps() == [2]
  monkeypatch.undo()

  resumed = train.train(config, workdir)
  assert _deterministic(resumed.records) == _deterministic(straight.records)
  assert_same_arrays(resumed.state, straight.state)
  rows = metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  assert [r["env_steps"] for r in rows] == [r["env_steps"] for r in straight.records]


def test_sac_resume_is_bitwise_identical(tmp_path, monkeypatch):
  """SAC learning from labels: the replay buffer, critics, temperature and the preference
  state all come back, so the resumed run is the straight one."""
  config = tiny_sac_pref_config()
  config.total_env_steps = NUM_CHUNKS * config_lib.env_steps_per_chunk(config)
  config.checkpoint.every_chunks = 10
  straight = train.train(config, str(tmp_path / "straight"))
  workdir = str(tmp_path / "run")
  interrupt_after(monkeypatch, 2)
  with pytest.raises(train.Interrupted, match="after chunk 2 of 4"):
    train.train(config, workdir)
  monkeypatch.undo()
  resumed = train.train(config, workdir)
  assert _deterministic(resumed.records) == _deterministic(straight.records)
  assert_same_arrays(resumed.state, straight.state)
  assert int(straight.state.agent.replay.size) == 100  # it wrapped
  assert int(straight.state.agent.gradient_steps) > 0


def test_checkpoint_holds_the_whole_state(tmp_path, straight):
  workdir = str(tmp_path / "run")
  result = train.train(four_chunks(tiny_config), workdir)
  checkpoints = checkpoint.Checkpointer(workdir, 3)
  assert checkpoints.steps() == [2, 3, 4]  # keep=3
  state, meta = checkpoints.restore_latest(result.trainer.abstract_state, print)
  assert_same_arrays(state, result.state)
  assert meta["chunk"] == 4 and meta["env_steps"] == result.records[-1]["env_steps"]
  assert meta["config"]["env"]["name"] == "inverted_pendulum"
  # The preference run's state includes the buffers, the reward model and its counters.
  pref_state = straight.state.preferences
  assert int(pref_state.labels_used) == 20 and int(pref_state.preferences.size) == 20


def test_finished_run_is_not_repeated_and_changed_config_is_refused(tmp_path):
  workdir = str(tmp_path / "run")
  first = train.train(four_chunks(tiny_config), workdir)
  again = train.train(four_chunks(tiny_config), workdir)
  assert again.records == first.records
  assert_same_arrays(again.state, first.state)

  changed = four_chunks(tiny_config)
  changed.env.name = "reacher"
  changed.ppo.policy_hidden_sizes = (32,)
  with pytest.raises(ValueError, match=r"env.name: 'inverted_pendulum' -> 'reacher'") as error:
    train.train(changed, workdir)
  assert "ppo.policy_hidden_sizes: [16] -> [32]" in str(error.value)

  harmless = four_chunks(tiny_config)
  harmless.checkpoint.every_chunks = 2
  harmless.checkpoint.keep = 5
  assert train.train(harmless, workdir).records == first.records

  shutil.rmtree(os.path.join(workdir, "checkpoints"))
  with pytest.raises(FileExistsError, match="no checkpoint to resume from"):
    train.train(four_chunks(tiny_config), workdir)


def test_keys_a_later_version_added_may_keep_their_default():
  """A run saved before `reward.update_every_env_steps` existed resumes with its default
  (it ran as the default does), not with another value; removed keys still count."""
  config = tiny_pref_config()
  saved = checkpoint.config_dict(config)
  del saved["reward"]["update_every_env_steps"]
  assert checkpoint.config_changes(saved, config) == []
  config.reward.update_every_env_steps = 480
  assert checkpoint.config_changes(saved, config) == [
    "reward.update_every_env_steps: '<absent>' -> 480"
  ]
  saved["reward"]["retired_key"] = 1
  config.reward.update_every_env_steps = 0
  assert checkpoint.config_changes(saved, config) == ["reward.retired_key: 1 -> '<absent>'"]


def _truncate_largest_file(directory):
  files = [os.path.join(root, f) for root, _, names in os.walk(directory) for f in names]
  largest = max(files, key=os.path.getsize)
  with open(largest, "r+b") as f:
    f.truncate(os.path.getsize(largest) // 2)


def _flip_a_byte(directory):
  """Changes one byte of array data (not its length): only the fingerprint can tell."""
  data_dir = os.path.join(directory, "state", "d")  # the merged OCDBT data orbax reads
  data = [os.path.join(data_dir, f) for f in os.listdir(data_dir)]
  largest = max(data, key=os.path.getsize)
  with open(largest, "r+b") as f:
    f.seek(os.path.getsize(largest) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("damage", [_truncate_largest_file, _flip_a_byte])
def test_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, monkeypatch, damage):
  workdir = str(tmp_path / "run")
  straight = train.train(four_chunks(tiny_config), str(tmp_path / "straight"))
  interrupt_after(monkeypatch, 2)
  with pytest.raises(train.Interrupted):
    train.train(four_chunks(tiny_config), workdir)
  monkeypatch.undo()
  damage(os.path.join(workdir, "checkpoints", "2"))

  log = []
  resumed = train.train(four_chunks(tiny_config), workdir, stream=_Lines(log))
  text = "".join(log)
  assert "checkpoint 2 in" in text and "is unreadable" in text
  assert "resuming from checkpoint 1 of 4" in text
  assert os.path.isdir(os.path.join(workdir, "corrupt_checkpoints", "2"))
  assert _deterministic(resumed.records) == _deterministic(straight.records)
  assert_same_arrays(resumed.state, straight.state)


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.float16, np.uint8, np.bool_])
def test_fingerprint_sees_every_bit(dtype):
  rng = np.random.default_rng(0)
  values = rng.integers(0, 255, size=(3, 5)).astype(dtype)
  tree = {"a": jnp.zeros(4), "b": jnp.asarray(values)}
  reference = int(checkpoint.fingerprint(tree))
  raw = values.view(np.uint8) if dtype != np.bool_ else values.astype(np.uint8)
  for index in range(raw.size):
    for bit in range(1 if dtype == np.bool_ else 8):
      flipped = raw.copy().reshape(-1)
      flipped[index] ^= 1 << bit
      changed = flipped.reshape(raw.shape)
      changed = changed.view(dtype) if dtype != np.bool_ else changed.astype(np.bool_)
      assert int(checkpoint.fingerprint({"a": tree["a"], "b": jnp.asarray(changed)})) != reference
  swapped = {"a": tree["b"], "b": tree["a"]}
  assert int(checkpoint.fingerprint(swapped)) != reference


def test_unrestorable_checkpoints_stop_the_run_instead_of_restarting(tmp_path):
  workdir = str(tmp_path / "run")
  train.train(four_chunks(tiny_config), workdir)
  other_layout = loop.make_trainer(four_chunks()).abstract_state  # the preference state
  checkpoints = checkpoint.Checkpointer(workdir, 3)
  with pytest.raises(RuntimeError, match=r"no checkpoint in .* restores \(4: "):
    checkpoints.restore_latest(other_layout, lambda text: None)
  assert checkpoints.steps() == [2, 3, 4]  # nothing moved aside
  assert not os.path.exists(os.path.join(workdir, "corrupt_checkpoints"))


class _Lines:
  def __init__(self, lines):
    self.lines = lines

  def write(self, text):
    self.lines.append(text)

  def flush(self):
    pass


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  make_trainer = loop.make_trainer

  def poisoned_trainer(config):
    trainer = make_trainer(config)
    calls = []

    class PoisonedChunk:  # the third chunk starts from a reward model with a NaN weight
      def __init__(self, compiled):
        self.compiled = compiled

      def __call__(self, state):
        calls.append(1)
        if len(calls) == 3:
          rm = state.preferences.reward_model
          params = jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(np.nan), rm.params)
          state = state.replace(
            preferences=state.preferences.replace(reward_model=rm.replace(params=params))
          )
        return self.compiled(state)

    class Lowered:
      def __init__(self, lowered):
        self.lowered = lowered

      def compile(self):
        return PoisonedChunk(self.lowered.compile())

    chunk = trainer.chunk
    poisoned = type("Jitted", (), {"lower": staticmethod(lambda s: Lowered(chunk.lower(s)))})
    return trainer._replace(chunk=poisoned)

  monkeypatch.setattr(loop, "make_trainer", poisoned_trainer)
  workdir = str(tmp_path / "run")
  with pytest.raises(train.NonFiniteError) as error:
    train.train(four_chunks(), workdir)
  message = str(error.value)
  # The chunk's first iteration (6 of the run) trains the poisoned reward model.
  assert "NaN or Inf in " in message and "at iteration 6 (env step 640)" in message
  assert "rm_train_loss" in message and "reward model params" in message
  assert "checkpoint 2 in" in message and "is kept" in message
  assert checkpoint.Checkpointer(workdir, 3).steps() == [1, 2]
  assert len(metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))) == 2


CONFIG_FILE = """
import json
import ml_collections

def get_config():
  return ml_collections.ConfigDict(json.loads({text!r}))
"""


def _start(config_path, workdir):
  return subprocess.Popen(
    [sys.executable, "-m", "rlhf_jax.train", f"--config={config_path}", f"--workdir={workdir}"],
    cwd=REPO,
    env=dict(
      os.environ,
      PYTHONPATH=REPO,
      JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir or "",
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="1",
    ),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )


def _wait_for_progress(process, lines: int) -> str:
  seen, progress = [], 0
  while progress < lines:
    line = process.stdout.readline()
    assert line, "the run ended early:\n" + "".join(seen)
    seen.append(line)
    progress += line.startswith("[")
  return "".join(seen)


@pytest.mark.slow  # about 70 s; the in-process SIGTERM and resume tests run by default
def test_cli_survives_sigterm_and_sigkill(tmp_path):
  """SIGTERM: a checkpoint and exit code 143. SIGKILL: the rerun resumes from the last
  checkpoint. The finished run's metrics equal an uninterrupted run's."""
  config_path = tmp_path / "long.py"
  config = four_chunks(tiny_config)  # the preference state's resume: the tests above
  config.total_env_steps *= 10  # 40 chunks
  config_path.write_text(CONFIG_FILE.format(text=config.to_json_best_effort()))
  workdir = tmp_path / "run"

  process = _start(config_path, workdir)
  _wait_for_progress(process, 3)
  process.send_signal(signal.SIGTERM)
  output = process.communicate(timeout=120)[0]
  assert process.returncode == 128 + signal.SIGTERM, output
  assert "stopped by SIGTERM after chunk" in output
  saved = checkpoint.Checkpointer(str(workdir), 3).steps()
  assert saved and max(saved) >= 3

  process = _start(config_path, workdir)
  _wait_for_progress(process, 3)
  process.kill()
  process.wait(timeout=60)
  rows = metrics.read_jsonl(str(workdir / "metrics.jsonl"))
  assert len(rows) < 40, "the run finished before it was killed; make it longer"

  process = _start(config_path, workdir)
  output = process.communicate(timeout=300)[0]
  assert process.returncode == 0, output
  assert "resuming from checkpoint" in output
  straight = train.train(
    checkpoint_config(config_path), str(tmp_path / "straight"), stream=_Lines([])
  )
  rows = metrics.read_jsonl(str(workdir / "metrics.jsonl"))
  assert _deterministic(rows) == _deterministic(straight.records)


def checkpoint_config(path):
  from rlhf_jax import config as config_lib

  return config_lib.load(str(path))


def test_second_sigint_exits_at_once(tmp_path):
  """The first Ctrl-C is acknowledged mid-chunk; the second ends the process before the
  chunk finishes (no checkpoint, killed by SIGINT)."""
  config = tiny_config()
  config.iterations_per_chunk = 2000  # chunks of a few seconds
  config.total_env_steps = 3 * 2000 * 80
  config_path = tmp_path / "slow_chunks.py"
  config_path.write_text(CONFIG_FILE.format(text=config.to_json_best_effort()))
  process = _start(config_path, tmp_path / "run")
  _wait_for_progress(process, 1)
  process.send_signal(signal.SIGINT)
  seen = []
  while not any("SIGINT: finishing this chunk" in line for line in seen):
    line = process.stdout.readline()
    assert line and "env steps" not in line, "the chunk ended first:\n" + "".join(seen)
    seen.append(line)
  process.send_signal(signal.SIGINT)
  process.communicate(timeout=60)
  assert process.returncode == -signal.SIGINT
  assert checkpoint.Checkpointer(str(tmp_path / "run"), 3).steps() == []
