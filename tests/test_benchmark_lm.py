"""experiments/benchmark_lm.py's own logic, without torch: the arguments both sides get,
the medians, tokens/s and ratios, the error without trl's Python, the worker protocol."""

import importlib.util
import os
import sys
import textwrap

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def experiment(name):
  path = os.path.join(REPO, "experiments", f"{name}.py")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


benchmark = experiment("benchmark_lm")
trl_worker = experiment("benchmark_lm_trl")


def test_defaults_and_the_worker_gets_the_same_sizes():
  args = benchmark.parse_args([])
  assert (args.width, args.layers, args.heads, args.vocab) == (128, 4, 4, 259)
  assert (args.batch, args.prompt_length, args.new_tokens) == (16, 32, 32)
  assert (args.ppo_epochs, args.num_minibatches) == (4, 4)

  args = benchmark.parse_args(["--width=64", "--batch=8", "--new_tokens=5", "--repeats=3"])
  command = benchmark.worker_command(args, "/some/python")
  assert command[:2] == ["/some/python", benchmark.TRL_WORKER]
  theirs = trl_worker.parse_args(command[2:])
  for name in ("width", "layers", "heads", "vocab", "batch", "prompt_length", "new_tokens"):
    assert getattr(theirs, name) == getattr(args, name), name
  assert (theirs.ppo_epochs, theirs.num_minibatches, theirs.seed) == (4, 4, 0)
  assert theirs.steps == args.warmup + args.repeats == 4
  assert theirs.threads == 1


def test_prompts_are_shared_and_avoid_trls_pad_id():
  prompts = trl_worker.make_prompts(0, 16, 32, 5)
  assert prompts.shape == (16, 32)
  assert set(np.unique(prompts)) == {0, 1, 2, 3}  # 4 = vocab - 1 is trl's pad id
  np.testing.assert_array_equal(prompts, trl_worker.make_prompts(0, 16, 32, 5))


def test_summary_medians_tokens_per_second_and_ratios():
  args = benchmark.parse_args([])  # 512 generated tokens, 4 x 16 x 64 = 4096 trained
  row = lambda g, r, learn: {"generation_s": g, "rollout_s": r, "learn_s": learn}
  ours = [row(0.1, 0.4, 3.0), row(0.3, 0.5, 1.0), row(0.2, 0.6, 2.0)]  # steps 3.4 1.5 2.6
  trl = [  # as the worker writes them
    {"event": "step", "step": 1, "optimizer_steps": 16, **row(0.4, 1.0, 2.0)},
    {"event": "step", "step": 2, "optimizer_steps": 16, **row(0.4, 1.5, 2.0)},
    {"event": "step", "step": 3, "optimizer_steps": 16, **row(0.8, 2.0, 2.0)},
  ]
  summary = benchmark.summarize(ours, trl, args)

  generation = summary["generation"]
  assert (generation["ours_s"], generation["trl_s"]) == (0.2, 0.4)
  assert generation["ours_tokens_per_s"] == pytest.approx(2560)
  assert generation["trl_tokens_per_s"] == pytest.approx(1280)
  assert generation["ratio"] == pytest.approx(2.0)
  assert summary["rollout"]["ratio"] == pytest.approx(3.0)
  training = summary["training"]
  assert training["tokens"] == 4096
  assert training["ours_tokens_per_s"] == pytest.approx(2048)
  assert training["ratio"] == pytest.approx(1.0)
  # The step is rollout + training within a round (median 2.6), not the medians' sum (2.5).
  step = summary["step"]
  assert (step["ours_s"], step["trl_s"]) == (pytest.approx(2.6), pytest.approx(3.5))
  assert step["ours_tokens_per_s"] == pytest.approx(512 / 2.6)
  assert step["ratio"] == pytest.approx(3.5 / 2.6)

  table = benchmark.format_table(summary).splitlines()
  assert table[0].split()[-1] == "ours/trl"
  assert table[1].split() == ["generation", "512", "0.200", "2,560", "0.400", "1,280", "2.00x"]
  assert table[3].split()[-1] == "1.00x"
  assert table[4].split()[-1] == "1.35x"


def test_a_missing_trl_python_says_how_to_make_one(tmp_path):
  with pytest.raises(SystemExit, match="python3 -m venv /work/trl_venv") as missing:
    benchmark.main([f"--trl_python={tmp_path / 'nowhere' / 'python'}"])
  assert "pip install torch==2.13.0+cpu trl==1.12.0 transformers" in str(missing.value)
  not_executable = tmp_path / "python"
  not_executable.write_text("")
  with pytest.raises(SystemExit, match="No Python for trl's side"):
    benchmark.check_trl_python(str(not_executable))
  assert benchmark.check_trl_python(sys.executable) == sys.executable


FAKE_WORKER = """
import json, sys
print("noise a library prints", file=sys.stderr)
print(json.dumps({"event": "ready", "parameters": 7}), flush=True)
for step, line in enumerate(sys.stdin, 1):
  if step > %(steps)d:
    raise SystemExit("fake worker: out of steps")
  row = {"event": "step", "step": step, "generation_s": 0.1, "rollout_s": 0.2, "learn_s": step}
  print(json.dumps(row), flush=True)
"""


def test_worker_protocol_one_step_per_go_and_a_crash_shows_its_output(tmp_path):
  script = tmp_path / "worker.py"
  script.write_text(textwrap.dedent(FAKE_WORKER % {"steps": 2}))
  worker = benchmark.TrlWorker([sys.executable, str(script)])
  assert worker.ready == {"event": "ready", "parameters": 7}
  assert [worker.step()["learn_s"] for _ in range(2)] == [1, 2]
  with pytest.raises(RuntimeError, match="(?s)exited \\(code 1\\).*out of steps"):
    worker.step()
  worker.close()

  script.write_text("import sys; print('no torch here', file=sys.stderr); sys.exit(3)")
  with pytest.raises(RuntimeError, match="(?s)code 3.*no torch here"):
    benchmark.TrlWorker([sys.executable, str(script)])
