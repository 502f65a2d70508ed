"""A person labels the LM pipeline's pairs: text pairs through the label store and the
app's API, answers read back as labels and comparisons by hand, the wait, and a round
queued twice (a resumed run) asking nothing twice."""

import numpy as np
import pytest

from rlhf_jax.labeling import app as labeling_app
from rlhf_jax.labeling.store import Store
from rlhf_jax.lm import human

PROMPTS = ["Review of the cafe:", "Note on the film:", "Feedback on the bike:", "Ode <b>x</b>:"]
FIRSTS = [" It was lovely.", " Dull.", " Great ride!", " <script>1</script>"]
SECONDS = [" It was awful.", " A joy to watch.", " Fine.", " ok"]


@pytest.fixture
def store(tmp_path) -> Store:
  store = Store(labeling_app.store_path(str(tmp_path)))
  assert human.queue(store, "c", PROMPTS, FIRSTS, SECONDS) == [1, 2, 3, 4]
  return store


def test_text_pairs_are_queued_once_under_their_name_with_nothing_to_render(store):
  assert store.counts() == {
    "pairs": 4,
    "labelled": 0,
    "waiting": 4,
    "unused": 0,
    "clips_pending": 0,
  }
  assert store.pairs_without_clips(limit=10) == []  # the clip renderer leaves them alone
  assert human.queue(store, "c", PROMPTS, FIRSTS, SECONDS) == [1, 2, 3, 4]  # a rerun: none
  assert human.queue(store, "online5_", PROMPTS[:2], FIRSTS[:2], SECONDS[:2]) == [5, 6]
  assert human.queue(store, "online5_", PROMPTS[:2], FIRSTS[:2], SECONDS[:2]) == [5, 6]
  assert human.queued(store, "online7_", 2) is None and human.queued(store, "c", 3) == [1, 2, 3]
  assert store.counts()["pairs"] == 6 and store.meta() == {"kind": "text"}


def test_the_app_hands_out_the_prompt_and_both_completions(store, tmp_path):
  client = labeling_app.create_app(str(tmp_path), clips=True).test_client()
  pair = client.get("/api/next?client=ann").get_json()["pair"]
  assert pair == {
    "pair_id": 1,
    "prompt": "Review of the cafe:",
    "left_text": " It was lovely.",
    "right_text": " It was awful.",
  }


def test_answers_become_labels_and_comparisons_by_hand(store):
  for pair_id, choice in ((1, "left"), (2, "right"), (3, "skip"), (4, "equal")):
    store.submit(pair_id, choice, "ann")
  labels, valid = human.labels(store.choices([1, 2, 3, 4]), [1, 2, 3, 4])
  np.testing.assert_array_equal(labels, [1.0, 0.0, 0.5, 0.5])
  np.testing.assert_array_equal(valid, [True, True, False, True])
  assert human.comparisons(store, [1, 2, 3, 4]) == [
    {
      "prompt": "Review of the cafe:",
      "chosen": " It was lovely.",
      "rejected": " It was awful.",
      "tie": False,
    },
    {
      "prompt": "Note on the film:",
      "chosen": " A joy to watch.",
      "rejected": " Dull.",
      "tie": False,
    },
    {"prompt": "Ode <b>x</b>:", "chosen": " <script>1</script>", "rejected": " ok", "tie": True},
  ]


def test_the_wait_ends_when_its_pairs_are_answered_and_says_what_is_left(store):
  answers = iter([(2, "right"), (5, "left"), (1, "left")])  # pair 5 is another round's
  human.queue(store, "online0_", PROMPTS[:1], FIRSTS[:1], SECONDS[:1])
  said, sleeps = [], []

  def sleep(seconds):  # a person answers one pair between two polls
    sleeps.append(seconds)
    store.submit(*next(answers), "ann")

  assert human.wait(store, [1, 2], 0.5, said.append, sleep=sleep) == {1: "left", 2: "right"}
  assert sleeps == [0.5] * 3 and store.counts()["waiting"] == 2  # pairs 3 and 4 still wait
  assert said == [f"human labels: {n} pairs wait to be labelled in the app" for n in (2, 1)]


def test_text_survives_the_store_round_trip_as_plain_strings(store):
  segment = store.segment("c3a")
  assert set(segment) == {"prompt", "completion"}
  assert segment["completion"].dtype.kind == "U" and str(segment["completion"]) == FIRSTS[3]
  np.testing.assert_array_equal(segment["prompt"], np.array(PROMPTS[3]))
