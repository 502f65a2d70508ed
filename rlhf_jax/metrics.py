"""Host side (not jittable): metric writers, console progress and the return plot.

A run's workdir holds `metrics.jsonl` (one JSON object per logged chunk),
TensorBoard event files under `tensorboard/`, and `return.png`.
"""

import json
import math
import os
import sys

from tensorboardX import SummaryWriter


class MetricsWriter:
  """Appends each chunk's metrics to metrics.jsonl and TensorBoard, and prints progress."""

  def __init__(self, workdir: str, total_env_steps: int, stream=sys.stdout, resumed_at=None):
    """`resumed_at`: the env steps of the checkpoint a resumed run starts from; TensorBoard
    events logged after it (by the run before the stop) are dropped."""
    os.makedirs(workdir, exist_ok=True)
    self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
    self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
    purge = None if resumed_at is None else resumed_at + 1
    self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=purge)
    self._total_env_steps = total_env_steps
    self._stream = stream

  def write(self, metrics: dict) -> None:
    """`metrics` must hold `env_steps`; None values are kept in JSON, skipped in TB."""
    self._jsonl.write(json.dumps(metrics) + "\n")
    self._jsonl.flush()
    step = metrics["env_steps"]
    for name, value in metrics.items():
      if name != "env_steps" and isinstance(value, (int, float)) and math.isfinite(value):
        self._tensorboard.add_scalar(name, value, step)
    self._tensorboard.flush()
    print(progress_line(metrics, self._total_env_steps), file=self._stream, flush=True)

  def close(self) -> None:
    self._jsonl.close()
    self._tensorboard.close()


class NoWriter:
  """MetricsWriter's stand-in on processes other than 0 of a multi-host run."""

  def write(self, metrics: dict) -> None:
    pass

  def close(self) -> None:
    pass


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def progress_line(metrics: dict, total_env_steps: int) -> str:
  steps = metrics["env_steps"]
  rate = metrics.get("steps_per_second") or 0.0
  left = (total_env_steps - steps) / rate if rate > 0 else float("nan")
  true_return = metrics.get("true_return")
  return_text = "   n/a" if true_return is None else f"{true_return:8.1f}"
  preferences = ""
  if "labels_used" in metrics:
    correlation = metrics.get("rm_true_correlation", float("nan"))
    pairs = metrics.get("rm_pair_accuracy", float("nan"))
    preferences = (
      f" | labels {metrics['labels_used']:>5,d} | r̂~r {correlation:5.2f} | pairs {pairs:4.2f}"
    )
  return (
    f"[{100.0 * steps / total_env_steps:5.1f}%] env steps {steps:>11,d} | "
    f"{rate:9,.0f} steps/s | true return {return_text}{preferences} | "
    f"elapsed {_duration(metrics.get('elapsed_seconds', 0.0))} | "
    f"left {_duration(left) if math.isfinite(left) else '?'}"
  )


def read_jsonl(path: str) -> list[dict]:
  """The rows of a .jsonl file; a last line cut short (the writer was killed) is dropped."""
  with open(path, encoding="utf-8") as f:
    lines = [line for line in f if line.strip()]
  rows = [json.loads(line) for line in lines[:-1]]
  try:
    rows += [json.loads(line) for line in lines[-1:]]
  except json.JSONDecodeError:
    pass
  return rows


def keep_records_until(path: str, env_steps: int) -> list[dict]:
  """Drops the rows of a metrics.jsonl logged after `env_steps` (chunks a resumed run
  repeats from its checkpoint) and returns the rows kept."""
  if not os.path.exists(path):
    return []
  records = [r for r in read_jsonl(path) if r["env_steps"] <= env_steps]
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
  os.replace(path + ".tmp", path)  # atomic: a stop now leaves the old file or the new one
  return records


def _points(records: list[dict], key: str) -> list[tuple]:
  return [(r["env_steps"], r[key]) for r in records if r.get(key) is not None]


def plot_returns(
  records: list[dict], path: str, title: str = "", baseline: list[dict] | None = None
) -> None:
  """Writes a PNG of true return against env steps, with the learned return (under the
  learned reward: normalized units, so on its own axis, right) and `baseline`'s true
  return (the rows of a true-reward run's metrics.jsonl) when given."""
  lines = {"true return": _points(records, "true_return")}
  if baseline:
    lines["true return of true-reward PPO"] = _points(baseline, "true_return")
  learned = _points(records, "learned_return")
  right = {"learned return (right axis)": learned} if learned else {}
  plot_lines({k: v for k, v in lines.items() if v}, path, title, "true episode return", right)


def plot_lines(
  lines: dict[str, list[tuple]],
  path: str,
  title: str,
  ylabel: str,
  right: dict[str, list[tuple]] | None = None,
  right_label: str = "learned episode return",
) -> None:
  """Writes a PNG with one line per entry of `lines` (label -> [(env steps, value)]), and
  dashed ones for `right` on a second y axis."""
  # A bare Figure (no pyplot) leaves the caller's backend alone, e.g. a notebook's inline one.
  from matplotlib.figure import Figure

  fig = Figure(figsize=(6, 4))
  ax = fig.subplots()
  handles = []
  for label, points in lines.items():
    steps, values = zip(*points, strict=True)
    handles += ax.plot(steps, values, label=label)
  if right:
    twin = ax.twinx()
    for index, (label, points) in enumerate(right.items()):
      steps, values = zip(*points, strict=True)
      color = f"C{len(lines) + index}"
      handles += twin.plot(steps, values, "--", color=color, label=label)
    twin.set_ylabel(right_label)
  ax.set_xlabel("env steps")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(handles=handles, loc="best")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
