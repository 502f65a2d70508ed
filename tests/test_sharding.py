"""Meshes: errors on one device here; the 8-device checks run in a subprocess."""

import os
import subprocess
import sys

import jax
import pytest

from rlhf_jax import config as config_lib
from rlhf_jax import sharding
from tests.test_loop import REPO


def test_mesh_takes_all_devices_by_default():
  mesh = sharding.make_mesh(config_lib.default_config())
  assert mesh.axis_names == ("data",) and sharding.data_size(mesh) == jax.device_count()


@pytest.mark.parametrize(
  "mesh, message",
  [
    ((("data", 3),), r"asks for 3 devices; there are 1"),
    ((("model", -1),), r"needs a 'data' axis"),
  ],
)
def test_bad_mesh_is_refused(mesh, message):
  config = config_lib.default_config()
  config.mesh = mesh
  with pytest.raises(ValueError, match=message):
    config_lib.validate(config)


@pytest.mark.slow  # about 2.5 minutes on 2 cores, mostly compiling for 8 devices
def run_on_eight_devices(test_file: str) -> str:
  """Runs `test_file`, all of it (slow or not), under pytest in a process that sees 8 CPU
  devices; asserts it exits 0 and returns its stdout."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", PYTHONPATH=REPO)
  command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
  result = subprocess.run(
    [*command, "-m", "slow or not slow", test_file],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
  return result.stdout


def test_on_eight_cpu_devices():
  """tests/eight_devices.py in a process that sees 8 CPU devices: 8 devices against 1,
  shardings, the learned reward computed where its envs live, no host transfer,
  checkpoints, seeds on a mesh."""
  stdout = run_on_eight_devices("tests/eight_devices.py")
  assert "8 passed" in stdout, stdout[-2000:]


def test_num_passes_is_the_fewest_that_divide_the_rows():
  assert sharding.num_passes(524_288, 65_536) == 8
  assert sharding.num_passes(100, 100) == 1
  assert sharding.num_passes(6, 4) == 2  # 2 passes of 3
  assert sharding.num_passes(7, 3) == 7  # 7 is prime: one row a pass
  assert sharding.num_passes(12, 5) == 3  # 3 passes of 4
