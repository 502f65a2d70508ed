"""Preference datasets: labelled pairs with their segments, as TensorFlow Datasets.

  python -m rlhf_jax.labeling.dataset --workdir=runs/x --data_dir=datasets

writes the labels of a run as the TFDS dataset `<name>` (default `rlhf_preferences`) in
array_record files, one example per labelled pair:

  first, second   the two segments: obs [K, O], action [K, A], next_obs [K, O],
                  true_reward [K], mask [K], qpos [K, Q] (enough to re-render them)
  label           P(first ≻ second): 1, 0 or 0.5 (pairs the labeller skipped are left out)
  source          "human" (the labeling app's store) or the simulated teacher's name
  index           the pair's place in the export, oldest label first (TFDS stores the
                  examples shuffled; `load` puts them back in this order)

and the dataset's metadata holds the env name, backend, control dt and segment length.
The labels come from the workdir's label store (`teacher=human`) or, for a simulated
teacher, from the preference buffer in the run's newest checkpoint.

A language model's comparisons (the LM pipeline's workdir: its label store of text pairs,
or the comparisons.jsonl a simulated teacher labelled) export as text instead:

  prompt          the prompt
  first, second   the two completions
  label, source, index   as above

and fit offline with the pipeline's rm stage: `--config.data.comparisons_path=
<data_dir>/<name>` reads the dataset (`comparisons(data_dir, name)`).

Reading needs neither TensorFlow nor this module: `tfds.data_source(name,
data_dir=...)` finds the dataset on disk; `load(data_dir)` returns it as NumPy arrays.
"""

import os

import numpy as np

from rlhf_jax.types import Segment

NAME = "rlhf_preferences"
VERSION = "1.0.0"


def _builder_class(name: str):
  import tensorflow_datasets as tfds  # noqa: PLC0415 (imported only when used: it is slow)

  class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes examples given in memory; reading goes through tfds's own reader."""

    VERSION = tfds.core.Version(VERSION)

    def __init__(self, examples: list[dict], meta: dict, **kwargs):
      self._examples, self._meta = examples, meta
      super().__init__(**kwargs)

    def _info(self):
      first = self._examples[0]["first"]
      if isinstance(first, str):  # a language model's completions
        pair = {"prompt": tfds.features.Text(), "first": tfds.features.Text()}
        pair["second"] = tfds.features.Text()
        what = "completions of a prompt"
      else:
        segment = tfds.features.FeaturesDict(
          {
            field: tfds.features.Tensor(shape=first[field].shape, dtype=np.float32)
            for field in Segment._fields
          }
        )
        pair, what = {"first": segment, "second": segment}, "segments"
      return self.dataset_info_from_configs(
        description=f"Labelled pairs of {what} for learning a reward (rlhf_jax).",
        features=tfds.features.FeaturesDict(
          {
            **pair,
            "label": tfds.features.Scalar(dtype=np.float32),
            "source": tfds.features.Text(),
            "index": tfds.features.Scalar(dtype=np.int64),
          }
        ),
        metadata=tfds.core.MetadataDict(self._meta),
      )

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      yield from enumerate(self._examples)

  Builder.name = name
  return Builder


def write(examples: list[dict], meta: dict, data_dir: str, name: str = NAME) -> str:
  """Writes `examples` (dicts of first, second, label, source; first and second segment
  arrays, or completions with a prompt) as the dataset `name` in `data_dir`; returns the
  dataset's directory. An existing version is replaced."""
  if not examples:
    raise ValueError("there are no labelled pairs to export")
  import shutil  # noqa: PLC0415

  target = os.path.join(data_dir, name, VERSION)
  if os.path.exists(target):
    shutil.rmtree(target)
  arrays = lambda side: {k: np.asarray(v, np.float32) for k, v in side.items()}
  examples = [
    {
      **(
        {"prompt": e["prompt"], "first": e["first"], "second": e["second"]}
        if "prompt" in e
        else {"first": arrays(e["first"]), "second": arrays(e["second"])}
      ),
      "label": np.float32(e["label"]),
      "source": e["source"],
      "index": np.int64(index),
    }
    for index, e in enumerate(examples)
  ]
  builder = _builder_class(name)(examples, meta, data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare()
  return target


def load(data_dir: str, name: str = NAME) -> tuple[dict, dict]:
  """(arrays, meta): `first` and `second` as Segment-field dicts of [P, K, ...] arrays
  (text datasets: `prompt`, `first` and `second` lists of strings), `label` [P] and
  `source` [P]; `meta` the dataset's metadata."""
  import tensorflow_datasets as tfds  # noqa: PLC0415

  source = tfds.data_source(name, data_dir=data_dir, split="train")
  rows = sorted((source[i] for i in range(len(source))), key=lambda row: int(row["index"]))
  text = lambda value: value.decode() if isinstance(value, bytes) else str(value)
  if "prompt" in rows[0]:
    arrays = {field: [text(r[field]) for r in rows] for field in ("prompt", "first", "second")}
  else:
    stack = lambda side: {f: np.stack([r[side][f] for r in rows]) for f in Segment._fields}
    arrays = {"first": stack("first"), "second": stack("second")}
  arrays["label"] = np.array([r["label"] for r in rows], np.float32)
  arrays["source"] = [text(r["source"]) for r in rows]
  return arrays, dict(source.dataset_info.metadata or {})


def comparisons(data_dir: str, name: str = NAME) -> list:
  """A text dataset as the LM pipeline's comparisons (`lm.data.Comparison`: the first
  completion chosen for label 1, the second for 0, a tie for 0.5)."""
  from rlhf_jax.lm.data import Comparison  # noqa: PLC0415

  arrays, _ = load(data_dir, name)
  if "prompt" not in arrays:
    raise ValueError(f"{os.path.join(data_dir, name)} holds segments, not text comparisons")
  rows = zip(arrays["prompt"], arrays["first"], arrays["second"], arrays["label"], strict=True)
  return [
    Comparison(prompt, second, first)
    if label == 0
    else Comparison(prompt, first, second, bool(label == 0.5))
    for prompt, first, second, label in rows
  ]


def from_store(workdir: str) -> tuple[list[dict], dict]:
  """The labels of `workdir`'s label store (skips left out) and its metadata."""
  from rlhf_jax.labeling import app  # noqa: PLC0415
  from rlhf_jax.labeling.store import Store  # noqa: PLC0415

  store = Store(app.store_path(workdir))
  rows = [r for r in store.labelled_pairs() if r["label"] is not None]
  if store.meta().get("kind") == "text":  # the LM pipeline's (lm/human.py)
    text = lambda row, side: str(row[side]["completion"])
    examples = [
      {
        "prompt": str(r["first"]["prompt"]),
        "first": text(r, "first"),
        "second": text(r, "second"),
        "label": r["label"],
        "source": "human",
      }
      for r in rows
    ]
    return examples, store.meta()
  examples = [
    {"first": r["first"], "second": r["second"], "label": r["label"], "source": "human"}
    for r in rows
  ]
  return examples, store.meta()


def from_comparisons(workdir: str) -> tuple[list[dict], dict]:
  """The comparisons an LM pipeline's simulated teacher labelled (comparisons.jsonl),
  the chosen completion first."""
  import json  # noqa: PLC0415

  from rlhf_jax.lm.data import read_comparisons  # noqa: PLC0415

  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as file:
    teacher = json.load(file)["comparisons"]["teacher"]
  examples = [
    {
      "prompt": c.prompt,
      "first": c.chosen,
      "second": c.rejected,
      "label": 0.5 if c.tie else 1.0,
      "source": teacher,
    }
    for c in read_comparisons(os.path.join(workdir, "comparisons.jsonl"))
  ]
  return examples, {"kind": "text"}


def from_checkpoint(workdir: str) -> tuple[list[dict], dict]:
  """The labels in the preference buffer of `workdir`'s newest checkpoint."""
  from rlhf_jax import checkpoint, loop  # noqa: PLC0415
  from rlhf_jax import config as config_lib  # noqa: PLC0415
  from rlhf_jax.labeling import render  # noqa: PLC0415

  config = config_lib.load_json(os.path.join(workdir, "config.json"))
  trainer = loop.make_trainer(config)
  manager = checkpoint.Checkpointer(workdir, keep=config.checkpoint.keep)
  try:
    restored = manager.restore_latest(trainer.abstract_state, print)
  finally:
    manager.close()
  if restored is None:
    raise ValueError(f"{workdir} has no checkpoint to export labels from")
  if config.num_seeds != 1:
    raise ValueError(f"{workdir} holds {config.num_seeds} seeds' runs; export one seed's run")
  buffer = restored[0].preferences.preferences
  # The ring buffer's filled slots, oldest label first.
  size, capacity = int(buffer.size), buffer.label.shape[0]
  order = (int(buffer.next_index) + np.arange(capacity)) % capacity
  order = order if size == capacity else np.arange(size)
  rows = lambda side: {f: np.asarray(getattr(side, f))[order] for f in Segment._fields}
  first, second = rows(buffer.first), rows(buffer.second)
  labels = np.asarray(buffer.label)[order]
  examples = [
    {
      "first": {f: v[i] for f, v in first.items()},
      "second": {f: v[i] for f, v in second.items()},
      "label": float(labels[i]),
      "source": config.teacher,
    }
    for i in range(size)
  ]
  return examples, render.clip_meta(config, trainer)


SOURCES = ("auto", "store", "checkpoint", "comparisons")


def export(workdir: str, data_dir: str, name: str = NAME, source: str = "auto") -> str:
  """Writes the labels of the run in `workdir` as a dataset; `source` is "store" (the
  labeling app's), "checkpoint" (a simulated teacher's), "comparisons" (an LM pipeline's
  comparisons.jsonl) or "auto" (the store if there is one, else the comparisons if there
  are, else the checkpoint). Returns the dataset's directory."""
  from rlhf_jax.labeling import app  # noqa: PLC0415

  if source == "auto":
    source = "checkpoint"
    if os.path.exists(os.path.join(workdir, "comparisons.jsonl")):
      source = "comparisons"
    if os.path.exists(app.store_path(workdir)):
      source = "store"
  if source not in SOURCES[1:]:
    raise ValueError(f"source must be one of {', '.join(SOURCES)}; got {source!r}")
  read = {"store": from_store, "checkpoint": from_checkpoint, "comparisons": from_comparisons}
  examples, meta = read[source](workdir)
  return write(examples, meta, data_dir, name)


def main(argv=None):
  import argparse  # noqa: PLC0415

  parser = argparse.ArgumentParser(description="Export a run's labels as a TFDS dataset.")
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--name", default=NAME)
  parser.add_argument("--source", default="auto", choices=SOURCES)
  args = parser.parse_args(argv)
  path = export(args.workdir, args.data_dir, args.name, args.source)
  arrays, _ = load(args.data_dir, args.name)
  print(f"wrote {len(arrays['label'])} labelled pairs to {path}")


if __name__ == "__main__":
  main()
