"""The closed vocabulary of the default task: words, their classes and sentiment.

Every word belongs to exactly one class, is written in lowercase ASCII letters (at most
`MAX_WORD_LETTERS`; "I" is stored as "i") and carries a valence (its sentiment: -2 .. 2)
and, for adverbs, a scale (how much it strengthens or softens the adjective after it).
`ALLOWED` says which class may follow which within a sentence (START and END are the
sentence's edges): it is the bigram skeleton of the grammar in `synthetic.py`, which the
gold reward (`gold.py`) checks text against. Both read this module and nothing else, so
changing a word list here changes the task and its reward together.

  sentence -> [OPENER ","] clause [[","] CONJ clause] "."
  clause   -> DET [ADJ] NOUN COPULA [NEG] [ADV] ADJ        "the cold soup was not very good"
            | PRON VERB DET [ADJ] NOUN                     "we loved the quiet room"
"""

import functools
from typing import NamedTuple

import numpy as np

MAX_WORD_LETTERS = 18  # the byte-level gold reward packs a word's letters into 3 x 6 x 5 bits

# Word classes. UNKNOWN is any word outside the lexicon (or miscased); START and END are
# the edges of a sentence in the transition table.
UNKNOWN, DET, PRON, NOUN, ADJ, ADV, NEG, COPULA, VERB, CONJ, OPENER, START, END = range(13)
NUM_CLASSES = 13
CLASS_NAMES = "UNKNOWN DET PRON NOUN ADJ ADV NEG COPULA VERB CONJ OPENER START END".split()
# Repeating one of these more than twice is penalized (function words may recur).
CONTENT_CLASSES = (NOUN, ADJ, ADV, VERB, OPENER)

DETERMINERS = ("the", "my", "our", "this")
PRONOUNS = ("i", "we", "they")
COPULAS = ("was", "felt", "seemed", "looked", "sounded", "tasted")
NEGATIONS = ("not", "never")
CONJUNCTIONS = ("and", "but", "while", "although")

# Adverbs and their scale of the next adjective's valence.
ADVERBS = {
  "very": 1.5,
  "really": 1.5,
  "truly": 1.5,
  "so": 1.5,
  "extremely": 2.0,
  "incredibly": 2.0,
  "quite": 1.25,
  "rather": 0.75,
  "fairly": 0.75,
  "somewhat": 0.5,
  "slightly": 0.5,
}

# Sentence openers (followed by a comma) and their valence.
OPENERS = {
  "overall": 0,
  "honestly": 0,
  "frankly": 0,
  "anyway": 0,
  "still": 0,
  "luckily": 1,
  "happily": 1,
  "thankfully": 1,
  "sadly": -1,
  "unfortunately": -1,
}

# Opinion verbs (PRON VERB DET NOUN) and their valence.
VERBS = {
  "loved": 2,
  "adored": 2,
  "liked": 1,
  "enjoyed": 1,
  "admired": 1,
  "appreciated": 1,
  "noticed": 0,
  "saw": 0,
  "tried": 0,
  "visited": 0,
  "remembered": 0,
  "disliked": -1,
  "regretted": -1,
  "hated": -2,
  "loathed": -2,
}

POSITIVE_ADJECTIVES = {
  **dict.fromkeys(
    "good nice pleasant friendly clean fresh tasty charming cheerful helpful cozy bright "
    "warm comfortable elegant smooth calm fun gentle sweet generous polite tidy fast "
    "reliable crisp".split(),
    1,
  ),
  **dict.fromkeys(
    "great lovely delicious wonderful excellent superb beautiful brilliant perfect "
    "fantastic amazing stunning delightful gorgeous".split(),
    2,
  ),
}
NEUTRAL_ADJECTIVES = dict.fromkeys(
  "small large big long short old new plain simple ordinary average usual quiet busy full "
  "round square brown green blue red white dark heavy tall narrow wide modern local early "
  "late thin thick wooden basic standard typical different familiar".split(),
  0,
)
NEGATIVE_ADJECTIVES = {
  **dict.fromkeys(
    "bad dirty rude slow cold boring noisy broken dull bland stale greasy cramped smelly "
    "expensive poor weak ugly sticky messy gloomy annoying mediocre shabby soggy clumsy "
    "unhelpful confusing harsh tiring overpriced unpleasant".split(),
    -1,
  ),
  **dict.fromkeys(
    "awful terrible horrible disappointing dreadful nasty painful useless".split(), -2
  ),
}

# Topics of the prompts: the things a prompt names, and the nouns its completions use.
TOPICS = {
  "restaurant": (
    ("cafe", "diner", "bakery", "noodle bar", "pizza place", "tea room"),
    ("food", "soup", "bread", "coffee", "waiter", "menu", "table", "dessert", "tea", "pasta"),
  ),
  "hotel": (
    ("hotel", "inn", "hostel", "guest house", "motel"),
    ("room", "bed", "pool", "staff", "breakfast", "lobby", "shower", "view", "carpet"),
  ),
  "film": (
    ("film", "movie", "show", "play", "concert"),
    ("plot", "ending", "music", "cast", "hero", "story", "script", "scene", "singer"),
  ),
  "gadget": (
    ("phone", "laptop", "camera", "watch", "speaker", "printer"),
    ("screen", "battery", "case", "sound", "button", "price", "design", "charger", "keyboard"),
  ),
  "outing": (
    ("beach", "park", "museum", "zoo", "market", "lake", "castle"),
    ("weather", "path", "crowd", "guide", "water", "garden", "ticket", "bench", "trip"),
  ),
  "book": (
    ("novel", "book", "poem", "comic", "magazine"),
    ("writing", "cover", "style", "chapter", "author", "title", "paper", "page"),
  ),
}
NOUNS = tuple(sorted({noun for _, nouns in TOPICS.values() for noun in nouns}))


class Entry(NamedTuple):
  word_class: int
  valence: float  # sentiment, -2 .. 2
  scale: float  # an adverb's factor on the next adjective's valence; 1 for other words


def _build_lexicon() -> dict[str, Entry]:
  groups = [
    (DET, dict.fromkeys(DETERMINERS, 0)),
    (PRON, dict.fromkeys(PRONOUNS, 0)),
    (NOUN, dict.fromkeys(NOUNS, 0)),
    (ADJ, POSITIVE_ADJECTIVES | NEUTRAL_ADJECTIVES | NEGATIVE_ADJECTIVES),
    (NEG, dict.fromkeys(NEGATIONS, 0)),
    (COPULA, dict.fromkeys(COPULAS, 0)),
    (VERB, VERBS),
    (CONJ, dict.fromkeys(CONJUNCTIONS, 0)),
    (OPENER, OPENERS),
  ]
  lexicon = {word: Entry(ADV, 0.0, scale) for word, scale in ADVERBS.items()}
  for word_class, words in groups:
    for word, valence in words.items():
      if word in lexicon:
        raise ValueError(f"Lexicon word {word!r} is in two classes.")
      lexicon[word] = Entry(word_class, float(valence), 1.0)
  for word in lexicon:
    if not (word.isascii() and word.isalpha() and word.islower()):
      raise ValueError(f"Lexicon word {word!r} is not lowercase ASCII letters.")
    if len(word) > MAX_WORD_LETTERS:
      raise ValueError(f"Lexicon word {word!r} is longer than {MAX_WORD_LETTERS} letters.")
  return lexicon


LEXICON: dict[str, Entry] = _build_lexicon()


def _allowed_transitions() -> np.ndarray:
  """bool [NUM_CLASSES, NUM_CLASSES]: ALLOWED[a, b] when class b may follow class a."""
  pairs = [
    (START, OPENER),
    (START, DET),
    (START, PRON),
    (OPENER, DET),
    (OPENER, PRON),
    (DET, ADJ),
    (DET, NOUN),
    (ADJ, NOUN),
    (NOUN, COPULA),
    (COPULA, NEG),
    (COPULA, ADV),
    (COPULA, ADJ),
    (NEG, ADV),
    (NEG, ADJ),
    (ADV, ADJ),
    (ADJ, CONJ),
    (ADJ, END),
    (PRON, VERB),
    (VERB, DET),
    (NOUN, CONJ),
    (NOUN, END),
    (CONJ, DET),
    (CONJ, PRON),
  ]
  allowed = np.zeros((NUM_CLASSES, NUM_CLASSES), bool)
  for first, second in pairs:
    allowed[first, second] = True
  return allowed


ALLOWED = _allowed_transitions()


@functools.cache
def words_of_class(word_class: int, valence: float | None = None) -> tuple[str, ...]:
  """The lexicon's words of a class (and of one valence sign: -1, 0, 1), sorted."""
  sign = lambda x: (x > 0) - (x < 0)
  return tuple(
    sorted(
      word
      for word, entry in LEXICON.items()
      if entry.word_class == word_class and (valence is None or sign(entry.valence) == valence)
    )
  )
