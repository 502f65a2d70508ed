"""The experiment scripts' own logic (their learning results are in the README)."""

import importlib.util
import os

import pytest

from tests.test_loop import REPO


def experiment(name):
  """experiments/<name>.py as a module (the folder is not a package)."""
  path = os.path.join(REPO, "experiments", f"{name}.py")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def fake_run(calls):
  def run(config, seed, condition, log):
    calls.append((condition, seed))
    gain = config.queries.total_labels if config.reward.source == "learned" else 1000
    row = {
      "condition": condition,
      "seed": seed,
      "env_steps": 100,
      "labels_used": config.queries.total_labels if config.reward.source == "learned" else 0,
      "initial_return": -1000.0,
      "final_return": -1000.0 + gain,
      "rm_true_correlation": None,
      "steps_per_second": 1.0,
    }
    return [{"condition": condition, "seed": seed, "env_steps": 100, "return": -500.0}], row

  return run


def test_label_efficiency_resume_runs_only_what_the_csvs_lack(tmp_path, monkeypatch):
  module = experiment("label_efficiency")
  out = str(tmp_path / "out")
  calls = []
  monkeypatch.setattr(module, "run", fake_run(calls))
  args = ["--env=inverted_pendulum", "--seeds=0,1", "--labels=100,200", f"--out={out}"]
  module.main(args)
  expected = [(c, s) for s in (0, 1) for c in ("true reward", "100 labels", "200 labels")]
  assert calls == expected

  rows = module.read_csv(out, "final.csv")
  module.write_csv(os.path.join(out, "final.csv"), [r for r in rows if r["seed"] == 0])
  calls.clear()
  summaries = module.main(args + ["--resume"])
  assert calls == [("true reward", 1), ("100 labels", 1), ("200 labels", 1)]
  ratios = {s["condition"]: s["ratio"] for s in summaries}
  assert ratios == pytest.approx({"true reward": 1.0, "100 labels": 0.1, "200 labels": 0.2})
  assert len(module.read_csv(out, "final.csv")) == len(module.read_csv(out, "curves.csv")) == 6
