"""The default offline task: reviews written from a small grammar, with a gold reward.

Nothing is downloaded; everything follows from a seed.
  prompts      every combination of a template, a modifier and a thing of one of the
               lexicon's topics ("A review of the old hotel:", "My day at the beach:"),
               sorted, then split into train and eval by a permutation from the seed
  completions  " " + one or two sentences from the grammar in `lexicon.py`, each clause
               positive, neutral or negative with equal chance (so the SFT model writes
               text of mixed sentiment), with nouns of the prompt's topic; at most
               MAX_COMPLETION_CHARS characters
  gold reward  `gold.gold_reward`: positive sentiment, but only in well-formed text
  comparisons  two completions of one prompt, "chosen" the one with the higher gold
               reward (ties are skipped): gold-labelled pairs for a reward model

`write_default_task(directory, seed)` writes the task as the JSONL files `data.py` reads,
so the default task and a user's own data take one path.
"""

import os
import random
from typing import NamedTuple

from rlhf_jax.lm import data, gold
from rlhf_jax.lm import lexicon as lex

MAX_COMPLETION_CHARS = 120
EVAL_FRACTION = 0.1

# {thing}: "the" + an optional modifier + a name from a topic.
PROMPT_TEMPLATES = (
  "A review of {thing}:",
  "My review of {thing}:",
  "Notes on {thing}:",
  "What I thought of {thing}:",
  "A short note about {thing}:",
  "Feedback on {thing}:",
)
PLACE_TEMPLATES = ("My day at {thing}:", "Our visit to {thing}:")  # restaurants, hotels, outings
PLACE_TOPICS = ("restaurant", "hotel", "outing")
MODIFIERS = ("", "new ", "old ", "small ", "local ")

# Chance of each optional part of a sentence.
P_SECOND_SENTENCE = 0.5
P_OPENER = 0.2
P_SECOND_CLAUSE = 0.4
P_COMMA_BEFORE_CONJUNCTION = 0.5
P_ATTRIBUTIVE_ADJECTIVE = 0.25
P_NEGATION = 0.15
P_ADVERB = 0.35
P_OPINION_CLAUSE = 0.4  # "we loved the room" rather than "the room was lovely"


class Prompt(NamedTuple):
  text: str
  topic: str


class DefaultTask(NamedTuple):
  train_prompts: list[Prompt]
  eval_prompts: list[Prompt]


def all_prompts() -> list[Prompt]:
  """Every prompt of the grammar, sorted by text (a few hundred)."""
  prompts = set()
  for topic, (names, _) in lex.TOPICS.items():
    templates = PROMPT_TEMPLATES + (PLACE_TEMPLATES if topic in PLACE_TOPICS else ())
    for template in templates:
      for modifier in MODIFIERS:
        for name in names:
          prompts.add(Prompt(template.format(thing=f"the {modifier}{name}"), topic))
  return sorted(prompts)


def split_prompts(seed: int, eval_fraction: float = EVAL_FRACTION) -> DefaultTask:
  """All prompts, shuffled by `seed` and split into train and eval (disjoint)."""
  prompts = all_prompts()
  random.Random(seed).shuffle(prompts)
  num_eval = max(1, round(eval_fraction * len(prompts)))
  return DefaultTask(train_prompts=prompts[num_eval:], eval_prompts=prompts[:num_eval])


def _clause(rng: random.Random, topic: str) -> list[str]:
  """One clause's words, its sentiment drawn uniformly among positive, neutral, negative."""
  tone = rng.choice((1, 0, -1))
  nouns = lex.TOPICS[topic][1]
  determiner = rng.choice(lex.DETERMINERS)
  attributive = [rng.choice(lex.words_of_class(lex.ADJ, 0))]
  attributive = attributive if rng.random() < P_ATTRIBUTIVE_ADJECTIVE else []
  if rng.random() < P_OPINION_CLAUSE:
    verb = rng.choice(lex.words_of_class(lex.VERB, tone))
    return [rng.choice(lex.PRONOUNS), verb, determiner, *attributive, rng.choice(nouns)]
  words = [determiner, *attributive, rng.choice(nouns), rng.choice(lex.COPULAS)]
  if rng.random() < P_NEGATION:
    words.append(rng.choice(lex.NEGATIONS))
    tone = -tone  # "not" turns the adjective around: the clause keeps the drawn tone
  if rng.random() < P_ADVERB:
    words.append(rng.choice(lex.words_of_class(lex.ADV)))
  return words + [rng.choice(lex.words_of_class(lex.ADJ, tone))]


def _sentence(rng: random.Random, topic: str) -> str:
  words = []
  if rng.random() < P_OPENER:
    words.append(rng.choice(lex.words_of_class(lex.OPENER)) + ",")
  words += _clause(rng, topic)
  if rng.random() < P_SECOND_CLAUSE:
    conjunction = rng.choice(lex.CONJUNCTIONS)
    if conjunction != "and" and rng.random() < P_COMMA_BEFORE_CONJUNCTION:
      words[-1] += ","
    words += [conjunction, *_clause(rng, topic)]
  words = ["I" if word == "i" else word for word in words]
  return " ".join(words)[0].upper() + " ".join(words)[1:] + "."


def sample_completion(rng: random.Random, topic: str) -> str:
  """ " " + one or two sentences about `topic`: a draw longer than MAX_COMPLETION_CHARS
  characters, or whose gold form is not perfect (a noun drawn three times), is drawn
  again, so every completion is well-formed and only its sentiment varies."""
  while True:
    count = 2 if rng.random() < P_SECOND_SENTENCE else 1
    completion = " " + " ".join(_sentence(rng, topic) for _ in range(count))
    if len(completion) <= MAX_COMPLETION_CHARS and gold.gold_details("", completion).form == 1:
      return completion


def sft_examples(prompts: list[Prompt], count: int, seed: int | str) -> list[data.SFTExample]:
  """`count` (prompt, completion) pairs, prompts drawn uniformly from `prompts`."""
  rng = random.Random(seed)
  examples = []
  for _ in range(count):
    prompt = rng.choice(prompts)
    examples.append(data.SFTExample(prompt.text, sample_completion(rng, prompt.topic)))
  return examples


def gold_comparisons(prompts: list[Prompt], count: int, seed: int | str) -> list[data.Comparison]:
  """`count` pairs of completions of one prompt, ordered by the gold reward."""
  rng = random.Random(seed)
  comparisons = []
  while len(comparisons) < count:
    prompt = rng.choice(prompts)
    first, second = (sample_completion(rng, prompt.topic) for _ in range(2))
    first_reward, second_reward = (gold.gold_reward(prompt.text, c) for c in (first, second))
    if first_reward == second_reward:
      continue
    chosen, rejected = (first, second) if first_reward > second_reward else (second, first)
    comparisons.append(data.Comparison(prompt.text, chosen, rejected))
  return comparisons


FILES = {
  "sft": "sft.jsonl",
  "train_prompts": "prompts_train.jsonl",
  "eval_prompts": "prompts_eval.jsonl",
  "comparisons": "comparisons.jsonl",
}


def write_default_task(
  directory: str, seed: int = 0, num_sft: int = 20_000, num_comparisons: int = 2_000
) -> dict[str, str]:
  """Writes the default task as JSONL (names in FILES) and returns their paths. SFT
  examples and comparisons use the train prompts only; eval prompts are held out."""
  task = split_prompts(seed)
  paths = {name: os.path.join(directory, file) for name, file in FILES.items()}
  # Independent streams for the two samples, derived from the seed.
  examples = sft_examples(task.train_prompts, num_sft, seed=f"sft/{seed}")
  comparisons = gold_comparisons(task.train_prompts, num_comparisons, seed=f"comparisons/{seed}")
  data.write_jsonl(paths["sft"], (e._asdict() for e in examples))
  data.write_jsonl(paths["train_prompts"], ({"prompt": p.text} for p in task.train_prompts))
  data.write_jsonl(paths["eval_prompts"], ({"prompt": p.text} for p in task.eval_prompts))
  data.write_jsonl(paths["comparisons"], (c._asdict() for c in comparisons))
  return paths
