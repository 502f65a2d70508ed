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
  args = ["--envs=inverted_pendulum", "--seeds=0,1", "--labels=100,200", f"--out={out}"]
  module.main(args)
  expected = [(c, s) for s in (0, 1) for c in ("true reward", "100 labels", "200 labels")]
  assert calls == expected

  env_out = os.path.join(out, "inverted_pendulum")
  rows = module.read_csv(env_out, "final.csv")
  module.write_csv(os.path.join(env_out, "final.csv"), [r for r in rows if r["seed"] == 0])
  calls.clear()
  summaries = module.main(args + ["--resume"])["inverted_pendulum"]
  assert calls == [("true reward", 1), ("100 labels", 1), ("200 labels", 1)]
  ratios = {s["condition"]: s["ratio"] for s in summaries}
  assert ratios == pytest.approx({"true reward": 1.0, "100 labels": 0.1, "200 labels": 0.2})
  assert len(module.read_csv(env_out, "final.csv")) == 6
  assert len(module.read_csv(env_out, "curves.csv")) == 6


def test_paper_table_has_a_row_and_a_panel_per_env_and_the_noisy_teachers(tmp_path, monkeypatch):
  module = experiment("label_efficiency")
  out = str(tmp_path / "out")
  calls = []
  monkeypatch.setattr(module, "run", fake_run(calls))
  envs = "inverted_pendulum,reacher"
  module.main(
    [f"--envs={envs}", "--seeds=0", "--labels=350,700", "--teachers=mistake", f"--out={out}"]
  )
  assert (
    calls
    == [(c, 0) for c in ("true reward", "350 labels", "700 labels", "700 labels, mistake")] * 2
  )
  table = module.read_csv(out, "paper_table.csv")
  assert [row["env"] for row in table] == envs.split(",")
  # fake_run: the true-reward run gains 1000 over the initial return, n labels gain n.
  assert table[0]["true_return"] == 0.0
  assert table[0]["ratio_350"] == pytest.approx(0.35) and table[1]["ratio_700"] == 0.7
  assert os.path.getsize(os.path.join(out, "paper_figure.png")) > 0
