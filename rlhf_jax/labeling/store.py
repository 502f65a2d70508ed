"""The label store: one SQLite file in the workdir that the trainer and the app share.

The trainer writes the pairs it wants labelled (with their segments, enough to re-render
them); the labeling app hands each pair to one labeller, records the answer, and lets the
labeller take back their last answer until the trainer has used it. Either side may be
restarted at any time: every change is one transaction (WAL journal, synchronous=FULL),
so a killed process loses at most the request it was answering.

Tables:
  meta      key -> value: what rendering needs (env name, backend, dt, ...)
  segments  id -> npz blob of the segment's arrays (obs, action, next_obs, true_reward,
            mask, qpos), or of a text completion (prompt, completion: 0-d strings; the
            language-model pipeline's comparisons, shown as text, no clip)
  pairs     id, first, second (segment ids), env_steps when asked, clips_ready,
            assigned_to / assigned_at (who is looking at it now)
  labels    pair_id, choice (left/right/equal/skip), client, created_at, and
            ingested_chunk: NULL until the trainer has added the label to its buffer
"""

import contextlib
import io
import json
import os
import sqlite3
import time

import numpy as np

STORE_NAME = "labels.sqlite"  # in the workdir the trainer and the app share
CHOICES = ("left", "right", "equal", "skip")
# P(first ≻ second) of each choice ("left" shows the pair's first segment); skip has none.
LABEL_OF_CHOICE = {"left": 1.0, "right": 0.0, "equal": 0.5}
# A pair handed out and not answered within this many seconds goes back to the queue.
ASSIGNMENT_SECONDS = 600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS segments (id TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS pairs (
  id INTEGER PRIMARY KEY,
  first TEXT NOT NULL REFERENCES segments(id),
  second TEXT NOT NULL REFERENCES segments(id),
  env_steps INTEGER NOT NULL,
  created_at REAL NOT NULL,
  clips_ready INTEGER NOT NULL DEFAULT 0,
  assigned_to TEXT,
  assigned_at REAL
);
CREATE TABLE IF NOT EXISTS labels (
  pair_id INTEGER PRIMARY KEY REFERENCES pairs(id),
  choice TEXT NOT NULL CHECK (choice IN ('left', 'right', 'equal', 'skip')),
  client TEXT NOT NULL,
  created_at REAL NOT NULL,
  ingested_chunk INTEGER
);
"""


class LabelError(Exception):
  """A request the store refuses; `status` is the HTTP status the app answers with."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


def encode_segment(arrays: dict) -> bytes:
  buffer = io.BytesIO()
  np.savez(buffer, **{name: np.asarray(value) for name, value in arrays.items()})
  return buffer.getvalue()


def decode_segment(blob: bytes) -> dict:
  with np.load(io.BytesIO(blob)) as data:
    return {name: data[name] for name in data.files}


class Store:
  """The SQLite file at `path`; each call opens its own connection (safe across threads
  and processes)."""

  def __init__(self, path: str, clock=time.time):
    self.path = path
    self.clock = clock
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    db = self._connect()
    try:
      db.executescript(_SCHEMA)  # one transaction of its own
    finally:
      db.close()

  def _connect(self) -> sqlite3.Connection:
    db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    return db

  @contextlib.contextmanager
  def _transaction(self):
    """One connection and one write transaction (BEGIN IMMEDIATE: writers queue up)."""
    db = self._connect()
    try:
      db.execute("BEGIN IMMEDIATE")
      try:
        yield db
      except BaseException:
        db.execute("ROLLBACK")
        raise
      db.execute("COMMIT")
    finally:
      db.close()

  # -- the trainer's side --------------------------------------------------------------

  def set_meta(self, values: dict) -> None:
    with self._transaction() as db:
      db.executemany(
        "INSERT OR REPLACE INTO meta VALUES (?, ?)",
        [(key, json.dumps(value)) for key, value in values.items()],
      )

  def meta(self) -> dict:
    with self._transaction() as db:
      return {key: json.loads(value) for key, value in db.execute("SELECT * FROM meta")}

  def add_pairs(
    self, pairs: list[tuple[str, dict, str, dict]], env_steps: int, clips_ready: bool = False
  ) -> list[int]:
    """Queues pairs (first id, first arrays, second id, second arrays); returns their ids.
    `clips_ready`: nothing to render (text pairs)."""
    now = self.clock()
    ids = []
    with self._transaction() as db:
      for first_id, first, second_id, second in pairs:
        for segment_id, arrays in ((first_id, first), (second_id, second)):
          db.execute(
            "INSERT OR IGNORE INTO segments VALUES (?, ?)", (segment_id, encode_segment(arrays))
          )
        cursor = db.execute(
          "INSERT INTO pairs (first, second, env_steps, created_at, clips_ready) "
          "VALUES (?, ?, ?, ?, ?)",
          (first_id, second_id, env_steps, now, int(clips_ready)),
        )
        ids.append(cursor.lastrowid)
    return ids

  def pair_ids(self, first_ids: list[str]) -> list[int | None]:
    """The id of the pair whose first segment is each of `first_ids` (None: not queued)."""
    with self._transaction() as db:
      found = {}
      for start in range(0, len(first_ids), 500):  # SQLite's limit on bound parameters
        part = first_ids[start : start + 500]
        marks = ", ".join("?" * len(part))
        found.update(db.execute(f"SELECT first, id FROM pairs WHERE first IN ({marks})", part))
    return [found.get(first_id) for first_id in first_ids]

  def choices(self, pair_ids: list[int]) -> dict[int, str]:
    """{pair id: choice} of those of `pair_ids` that are answered."""
    with self._transaction() as db:
      found = {}
      for start in range(0, len(pair_ids), 500):
        part = pair_ids[start : start + 500]
        marks = ", ".join("?" * len(part))
        query = f"SELECT pair_id, choice FROM labels WHERE pair_id IN ({marks})"
        found.update(db.execute(query, part))
    return found

  def take_labels(self, chunk: int, older_than: float = 0.0) -> list[dict]:
    """The answered pairs not yet ingested whose label is at least `older_than` seconds
    old (so a labeller can still undo a fresh one), marked as ingested at `chunk`.
    Each: {pair_id, choice, label (None for skip), first, second (segment arrays)}."""
    with self._transaction() as db:
      rows = self._labelled(
        db, "l.ingested_chunk IS NULL AND l.created_at <= ?", (self.clock() - older_than,)
      )
      db.executemany(
        "UPDATE labels SET ingested_chunk = ? WHERE pair_id = ?",
        [(chunk, row["pair_id"]) for row in rows],
      )
    return rows

  def labelled_pairs(self) -> list[dict]:
    """Every answered pair, as `take_labels` gives them, without marking anything."""
    with self._transaction() as db:
      return self._labelled(db, "1", ())

  @staticmethod
  def _labelled(db, where: str, parameters: tuple) -> list[dict]:
    rows = db.execute(
      "SELECT l.pair_id, l.choice, f.data, s.data FROM labels l "
      "JOIN pairs p ON p.id = l.pair_id JOIN segments f ON f.id = p.first "
      f"JOIN segments s ON s.id = p.second WHERE {where} ORDER BY l.pair_id",
      parameters,
    ).fetchall()
    return [
      {
        "pair_id": pair_id,
        "choice": choice,
        "label": LABEL_OF_CHOICE.get(choice),
        "first": decode_segment(first),
        "second": decode_segment(second),
      }
      for pair_id, choice, first, second in rows
    ]

  def forget_ingested_after(self, chunk: int) -> int:
    """Marks labels ingested after `chunk` as new again (the trainer resumed from the
    checkpoint of `chunk`, whose buffer lacks them). Returns how many."""
    with self._transaction() as db:
      return db.execute(
        "UPDATE labels SET ingested_chunk = NULL WHERE ingested_chunk > ?", (chunk,)
      ).rowcount

  def counts(self) -> dict:
    """{pairs, labelled, waiting (not yet answered), unused (labelled, not yet ingested),
    clips_pending}."""
    with self._transaction() as db:
      pairs, labelled, unused, pending = db.execute(
        "SELECT COUNT(*), COUNT(l.pair_id), SUM(l.pair_id IS NOT NULL AND l.ingested_chunk "
        "IS NULL), SUM(p.clips_ready = 0 AND l.pair_id IS NULL) "
        "FROM pairs p LEFT JOIN labels l ON l.pair_id = p.id"
      ).fetchone()
    return {
      "pairs": pairs,
      "labelled": labelled,
      "waiting": pairs - labelled,
      "unused": unused or 0,
      "clips_pending": pending or 0,
    }

  # -- the renderer's side -------------------------------------------------------------

  def pairs_without_clips(self, limit: int) -> list[tuple[int, str, str]]:
    with self._transaction() as db:
      return db.execute(
        "SELECT p.id, p.first, p.second FROM pairs p LEFT JOIN labels l ON l.pair_id = p.id "
        "WHERE p.clips_ready = 0 AND l.pair_id IS NULL ORDER BY p.id LIMIT ?",
        (limit,),
      ).fetchall()

  def segment(self, segment_id: str) -> dict:
    with self._transaction() as db:
      row = db.execute("SELECT data FROM segments WHERE id = ?", (segment_id,)).fetchone()
    if row is None:
      raise LabelError(404, f"no segment {segment_id!r}")
    return decode_segment(row[0])

  def pair(self, pair_id: int) -> tuple[str, str]:
    """The segment ids (first, second) of a pair."""
    with self._transaction() as db:
      row = db.execute("SELECT first, second FROM pairs WHERE id = ?", (pair_id,)).fetchone()
    if row is None:
      raise LabelError(404, f"no pair {pair_id}")
    return row

  def mark_clips_ready(self, pair_ids: list[int]) -> None:
    with self._transaction() as db:
      db.executemany("UPDATE pairs SET clips_ready = 1 WHERE id = ?", [(i,) for i in pair_ids])

  # -- the labeller's side -------------------------------------------------------------

  def next_pair(self, client: str, need_clips: bool = True) -> dict | None:
    """The pair `client` should label now: the one already handed to it, else the oldest
    unanswered pair nobody holds. None when there is none. A pair is held by one client
    at a time, so two labellers never see the same pair."""
    now = self.clock()
    with self._transaction() as db:
      unanswered = (
        "FROM pairs p LEFT JOIN labels l ON l.pair_id = p.id WHERE l.pair_id IS NULL "
        + ("AND p.clips_ready = 1 " if need_clips else "")
      )
      row = db.execute(
        f"SELECT p.id, p.first, p.second {unanswered} AND p.assigned_to = ? "
        "AND p.assigned_at > ? ORDER BY p.id LIMIT 1",
        (client, now - ASSIGNMENT_SECONDS),
      ).fetchone()
      if row is None:
        row = db.execute(
          f"SELECT p.id, p.first, p.second {unanswered} "
          "AND (p.assigned_to IS NULL OR p.assigned_at <= ?) ORDER BY p.id LIMIT 1",
          (now - ASSIGNMENT_SECONDS,),
        ).fetchone()
      if row is None:
        return None
      db.execute(
        "UPDATE pairs SET assigned_to = ?, assigned_at = ? WHERE id = ?", (client, now, row[0])
      )
    return {"pair_id": row[0], "first": row[1], "second": row[2]}

  def submit(self, pair_id, choice, client: str) -> None:
    """Records `client`'s answer to `pair_id`; raises LabelError (and changes nothing) for
    an unknown pair, a bad choice, a pair already answered or held by someone else."""
    if choice not in CHOICES:
      raise LabelError(400, f"choice must be one of {', '.join(CHOICES)}; got {choice!r}")
    if not isinstance(pair_id, int) or isinstance(pair_id, bool):
      raise LabelError(400, f"pair_id must be an integer; got {pair_id!r}")
    if not 0 < pair_id < 2**63:  # beyond SQLite's integers: no such pair
      raise LabelError(404, f"no pair {pair_id}")
    now = self.clock()
    with self._transaction() as db:
      row = db.execute(
        "SELECT assigned_to, assigned_at FROM pairs WHERE id = ?", (pair_id,)
      ).fetchone()
      if row is None:
        raise LabelError(404, f"no pair {pair_id}")
      if db.execute("SELECT 1 FROM labels WHERE pair_id = ?", (pair_id,)).fetchone():
        raise LabelError(409, f"pair {pair_id} is already labelled")
      holder, since = row
      if holder is not None and holder != client and since > now - ASSIGNMENT_SECONDS:
        raise LabelError(409, f"pair {pair_id} is being labelled by someone else")
      db.execute(
        "INSERT INTO labels (pair_id, choice, client, created_at) VALUES (?, ?, ?, ?)",
        (pair_id, choice, client, now),
      )
      # The pair stays with this client, so an undo gives it back to the same person.
      db.execute(
        "UPDATE pairs SET assigned_to = ?, assigned_at = ? WHERE id = ?", (client, now, pair_id)
      )

  def undo(self, client: str) -> int:
    """Takes back `client`'s newest label; the pair is handed to `client` again. Returns
    the pair id. Raises LabelError when there is nothing to undo or the trainer has
    already used that label."""
    now = self.clock()
    with self._transaction() as db:
      row = db.execute(
        "SELECT pair_id, ingested_chunk FROM labels WHERE client = ? "
        "ORDER BY created_at DESC, pair_id DESC LIMIT 1",
        (client,),
      ).fetchone()
      if row is None:
        raise LabelError(409, "nothing to undo")
      pair_id, ingested = row
      if ingested is not None:
        raise LabelError(409, f"the label of pair {pair_id} has already been used in training")
      db.execute("DELETE FROM labels WHERE pair_id = ?", (pair_id,))
      db.execute(
        "UPDATE pairs SET assigned_to = ?, assigned_at = ? WHERE id = ?", (client, now, pair_id)
      )
    return pair_id

  def labels(self) -> list[dict]:
    """Every label given, oldest first."""
    with self._transaction() as db:
      rows = db.execute(
        "SELECT l.pair_id, p.first, p.second, l.choice, l.client, l.created_at, "
        "l.ingested_chunk FROM labels l JOIN pairs p ON p.id = l.pair_id "
        "ORDER BY l.created_at, l.pair_id"
      ).fetchall()
    names = ("pair_id", "first", "second", "choice", "client", "created_at", "ingested_chunk")
    return [dict(zip(names, row, strict=True)) for row in rows]
