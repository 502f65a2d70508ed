"""Two processes on this machine train together over loopback, as two hosts would."""

import json
import os
import subprocess
import sys

import pytest

from rlhf_jax import metrics
from rlhf_jax.labeling.scripted import free_port
from tests.test_loop import REPO


@pytest.mark.slow  # two processes compiling side by side on 2 cores
def test_two_processes_train_together_and_agree(tmp_path):
  port, workdir = free_port(), str(tmp_path / "run")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", PYTHONPATH=REPO)
  worker = os.path.join(REPO, "tests", "multihost_worker.py")
  processes = [
    subprocess.Popen(
      [sys.executable, worker, str(port), str(i), workdir],
      cwd=REPO,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  outputs = [p.communicate(timeout=600)[0] for p in processes]
  for p, out in zip(processes, outputs, strict=True):
    assert p.returncode == 0, out[-4000:]
  reports = [
    json.loads(line.removeprefix("RESULT "))
    for out in outputs
    for line in out.splitlines()
    if line.startswith("RESULT ")
  ]
  assert sorted(r["process"] for r in reports) == [0, 1]
  assert all(r["devices"] == 4 for r in reports)  # 2 processes x 2 CPU devices, one mesh
  assert reports[0]["fingerprint"] == reports[1]["fingerprint"]
  assert reports[0]["params"] == reports[1]["params"]
  # Only process 0 logs: its progress lines and metrics.jsonl; process 1 prints none.
  progress = [[line for line in out.splitlines() if "| true return" in line] for out in outputs]
  assert len(progress[0]) == 2 and progress[1] == []
  assert len(metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))) == 2
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["2"]
