"""The whole human-feedback path with a scripted person in place of a real one.

  python experiments/scripted_human_run.py --config=configs/reacher_pref.py \
      --workdir=runs/reacher_human --config.total_env_steps=2000000 \
      --config.iterations_per_chunk=1

1. starts the labeling app (`python -m rlhf_jax.label`, rendering clips) on the workdir;
2. starts a scripted person (rlhf_jax/labeling/scripted.py) labelling through its HTTP
   API at `--seconds_per_label`;
3. trains with `teacher=human` (asynchronous unless --config.human.wait=true): the run
   queues pairs, the app renders them ahead, the labels flow back between chunks;
4. exports the labels as a TFDS dataset and fits a fresh reward model to it offline
   (experiments/train_reward_offline.py), printing the held-out accuracy.
"""

import os
import sys
import threading
import time

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rlhf_jax import train  # noqa: E402
from rlhf_jax.labeling import dataset  # noqa: E402
from rlhf_jax.labeling.scripted import ScriptedPerson, free_port, start_app  # noqa: E402

_CONFIG, _WORKDIR = train._CONFIG, train._WORKDIR  # noqa: SLF001 (the same --config, --workdir)
_PACE = flags.DEFINE_float("seconds_per_label", 0.5, "The scripted person's pace.")
_RENDER_PROCESSES = flags.DEFINE_integer("render_processes", 1, "Processes rendering clips.")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config, workdir = _CONFIG.value, _WORKDIR.value
  config.teacher = "human"
  port = free_port()
  os.makedirs(workdir, exist_ok=True)
  log = open(os.path.join(workdir, "label_app.log"), "w")  # noqa: SIM115
  server = start_app(workdir, port, render_processes=_RENDER_PROCESSES.value, log=log)
  url = f"http://127.0.0.1:{port}"
  print(f"labeling app at {url}/ (clips rendered by {_RENDER_PROCESSES.value} processes)")
  person = ScriptedPerson(workdir, url)
  done = threading.Event()
  thread = threading.Thread(
    target=person.run, kwargs={"stop": done.is_set, "seconds_per_label": _PACE.value}
  )
  thread.start()
  start = time.perf_counter()
  try:
    result = train.train(config, workdir)
  finally:
    done.set()
    thread.join()
    server.terminate()
    server.wait()
  last = result.records[-1]
  print(
    f"trained {time.perf_counter() - start:.0f} s: the scripted person gave {person.given} "
    f"labels, {last['labels_used']} used; final true return {last['true_return']}"
  )
  data_dir = os.path.join(workdir, "dataset")
  dataset.export(workdir, data_dir)
  arrays, _ = dataset.load(data_dir)
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import train_reward_offline  # noqa: PLC0415

  fitted = train_reward_offline.fit(arrays, config, steps=2000, test_fraction=0.2, seed=0)
  print(
    f"offline: {fitted['pairs']} pairs, held-out accuracy {fitted['test_accuracy']:.3f} "
    f"(untrained {fitted['untrained_test_accuracy']:.3f})"
  )


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
