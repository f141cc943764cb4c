"""``POST /recommend``: the two stages of a recommender in one request, retrieval then ranking.

    python tools/serve.py --recall <retrieval export> --rank <ranking export> [--candidates 100]

A request holds users as **raw field values**, the columns of the two models' ``data_config`` by name, as a
data line holds them (numbers or strings; a list for a multi-value field, a ``TagFeature`` or ``SequenceFeature``,
joined with its separator; ``null`` or absent for an empty field)::

    {"users": [{"user_id": 17, "gender": "F", "age": 25, "occupation": 4, "zip": "422",
                "hist_item_id": [323, 279, 164]}],
     "k": 10, "candidates": 100, "exclude": [[12, 40]], "exclude_history": true}

For each user:

1. **retrieval**: the user's fields become one line in the retrieval model's data layout, read by its reader (the
   parser of training, so the ids are the ones the model learnt), through the user tower, and the ``candidates``
   best items of the corpus are taken as ``/recall`` takes them (exact or the ``--index``; the history and
   ``exclude`` left out);
2. **ranking**: one line per candidate in the ranking model's data layout: the user's fields, the candidate's
   fields from the retrieval export's item table (``items.txt``: the item features as the item table holds them),
   every other column empty (labels); read by the ranking model's reader, scored by the ranking model (its output
   ``--rank_output``, default the first);
3. the candidates in order of the ranking score (ties: the retrieval order), the first ``k`` returned.

Answer: ``{"code": 200, "k": k, "candidates": n, "items": [[id, ...]], "scores": [[rank score, ...]],
"recall_scores": [[...]], "took_ms": {"recall": ..., "rank": ...}}`` (fewer than ``k`` items where the corpus,
less the excluded items, holds fewer).

A field value the reader refuses is a 400 naming ``users[i]`` (and, in the ranking stage, the candidate) and the
field, as ``/upload`` names a line.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from recstack.easyrec.features import TabularSpec
from recstack.serving.model import UPLOAD_NAME
from recstack.serving.validation import RequestError

logger = logging.getLogger("recstack.serving")

#: the most candidates a request may ask for unless the server says otherwise (``--max_candidates``)
DEFAULT_CANDIDATES = 100


class LineLayout:
    """The column layout of a model's data lines (``data_config``): turns raw field values into lines."""

    def __init__(self, spec: TabularSpec, what: str) -> None:
        self.what = what
        self.separator = spec.separator
        self.fields = [f.name for f in spec.input_fields]
        self.labels = set(spec.label_fields)
        #: multi-value fields (read by a tag or sequence feature) and the separator inside their cells
        self.joiners = {f.input_name: f.separator or "|" for f in spec.features if f.is_ragged}
        #: fields a feature reads as one value (a field no feature reads is not parsed: any value goes)
        self.single = {f.input_name for f in spec.features if not f.is_ragged} - set(self.joiners)

    def cell(self, value: Any, field: str, where: str) -> str:
        """One field's text; :class:`RequestError` naming ``where`` for a value a line cannot hold."""
        if value is None:
            return ""
        joiner = self.joiners.get(field)
        if isinstance(value, list):
            if field in self.single:
                raise RequestError(f"{where}: '{field}' holds one value in the {self.what} model's data, got a "
                                   "list", field=where)
            joiner = joiner or "|"
            return joiner.join(self._scalar(v, field, where, joiner) for v in value)
        return self._scalar(value, field, where, joiner)

    def _scalar(self, value: Any, field: str, where: str, joiner: str | None) -> str:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise RequestError(f"{where}: '{field}' must be a number, a string, a list of them or null, got "
                               f"{type(value).__name__}", field=where)
        if isinstance(value, float) and not np.isfinite(value):
            raise RequestError(f"{where}: '{field}' must be finite, got {value!r}", field=where)
        text = str(value)
        forbidden = [c for c in (self.separator, "\n", "\r", *([joiner] if joiner else [])) if c in text]
        if forbidden:
            raise RequestError(f"{where}: '{field}' value {text[:40]!r} holds {forbidden[0]!r}, which separates "
                               f"the {self.what} model's data", field=where)
        return text


class ItemTable:
    """The raw item features of a retrieval export (``items.txt``, ``retrieval.item_table`` of ``model.json``):
    item id -> the text of each field."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        retrieval = json.loads((folder / "model.json").read_text(encoding="utf-8"))["retrieval"]
        table = retrieval.get("item_table")
        name = retrieval["files"].get("items")
        if table is None or name is None:
            raise ValueError(f"{folder}: the export has no item table (items.txt); export it again with "
                             "tools/to_static.py")
        self.fields: list[str] = list(table["fields"])
        self.id_field: str = table["id_field"]
        path = folder / name
        data = pacsv.read_csv(path, read_options=pacsv.ReadOptions(column_names=self.fields, use_threads=False),
                              parse_options=pacsv.ParseOptions(delimiter=table["separator"], quote_char=False),
                              convert_options=pacsv.ConvertOptions(
                                  column_types={f: pa.string() for f in self.fields}, strings_can_be_null=False))
        columns = [data.column(f).to_pylist() for f in self.fields]
        ids = columns[self.fields.index(self.id_field)]
        try:
            keys = [int(v) for v in ids]
        except ValueError as err:
            raise ValueError(f"{path}: the item id field '{self.id_field}' must hold integers ({err})") from None
        self.rows: dict[int, list[str]] = {key: [c[i] for c in columns] for i, key in enumerate(keys)}

    def row(self, item: int) -> list[str]:
        """The text of each field (:attr:`fields` order) of an item."""
        row = self.rows.get(int(item))
        if row is None:
            raise KeyError(f"item {item} is not in the item table")
        return row


class TwoStage:
    """The request handling of ``/recommend`` that needs no event loop: parsing, lines, ordering.

    Args:
        recall_config, rank_config: the two exports' configs (their ``data_config`` give the line layouts).
        items: the retrieval export's item table.
        max_k: the largest ``k`` / ``candidates`` (the retrieval ``--max_k``, the corpus size).
        default_candidates: ``candidates`` of a request that does not say.
        max_users: the most users of one request (``--max_rows``).
        max_rank_rows: the most (user, candidate) rows one request may make the ranking model score.
        rank_output: the index of the ranking model's output that orders the candidates.
    """

    def __init__(self, recall_config: Any, rank_config: Any, items: ItemTable, max_k: int,
                 default_candidates: int = DEFAULT_CANDIDATES, max_users: int = 4096,
                 max_rank_rows: int = 100_000, rank_output: int = 0) -> None:
        self.rank_output = rank_output
        self.recall = LineLayout(TabularSpec.from_config(recall_config), "retrieval")
        self.rank = LineLayout(TabularSpec.from_config(rank_config), "ranking")
        self.items = items
        item_fields = set(items.fields)
        #: the ranking layout's fields the item table fills
        self.rank_item_fields = [f for f in self.rank.fields if f in item_fields]
        #: (position in a ranking line, column of the item table) of each of them
        self._item_columns = [(self.rank.fields.index(f), items.fields.index(f)) for f in self.rank_item_fields]
        #: the fields a request's user may give (every column of either layout but labels and item fields) and,
        #: for messages, those a feature of either model reads
        self._accepted = {f for layout in (self.recall, self.rank) for f in layout.fields
                          if f not in layout.labels and f not in item_fields}
        read = {f for layout in (self.recall, self.rank) for f in (*layout.single, *layout.joiners)}
        self.user_fields = sorted(self._accepted & read)
        self.max_k = max_k
        self.default_candidates = min(default_candidates, max_k)
        self.max_users, self.max_rank_rows = max_users, max_rank_rows

    def warmup(self, recall_model: Any, rank_model: Any) -> None:
        """Parse one line of each layout (the readers' first parse costs ~0.2 s: not the first request's);
        a failure is only logged (the first request then reports it)."""
        item = next(iter(self.items.rows))
        try:
            recall_model.parse_upload(self.recall_lines([{}]), 1)
            rank_model.parse_upload(self.rank_lines([{}], np.asarray([[item]]))[0], 1)
        except Exception as err:  # noqa: BLE001 - a warm-up only
            logger.warning("/recommend warm-up: %s", err)

    def describe(self) -> dict[str, Any]:
        return {"user_fields": self.user_fields, "item_fields": self.rank_item_fields,
                "default_candidates": self.default_candidates, "max_candidates": self.max_k,
                "max_rank_rows": self.max_rank_rows}

    # ------------------------------------------------------------------ requests
    def parse(self, document: Any) -> tuple[list[dict[str, Any]], int, int]:
        """``(users, k, candidates)`` of a request (``exclude`` / ``exclude_history`` are left in ``document``
        for :meth:`recstack.serving.recall.RecallIndex.parse_options`)."""
        if not isinstance(document, dict):
            raise RequestError("the request body must be a JSON object")
        users = document.pop("users", None)
        if not isinstance(users, list) or not users:
            raise RequestError('the body needs "users": a non-empty list of objects of raw field values '
                               f"({', '.join(self.user_fields)})", field="users")
        if len(users) > self.max_users:
            raise RequestError(f"{len(users)} users is more than this server takes in one request "
                               f"({self.max_users}, --max_rows); split the request", status=413)
        candidates = document.pop("candidates", self.default_candidates)
        if isinstance(candidates, bool) or not isinstance(candidates, int) or not 1 <= candidates <= self.max_k:
            raise RequestError(f"'candidates' must be an integer in [1, {self.max_k}] (--max_k, the corpus size), "
                               f"got {candidates!r}", field="candidates")
        k = document.pop("k", min(10, candidates))
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= candidates:
            raise RequestError(f"'k' must be an integer in [1, candidates = {candidates}], got {k!r}", field="k")
        if len(users) * candidates > self.max_rank_rows:
            raise RequestError(f"{len(users)} users x {candidates} candidates is more rows than the ranking model "
                               f"scores for one request ({self.max_rank_rows}, --max_rank_rows)", status=413)
        known = self._accepted
        for i, user in enumerate(users):
            if not isinstance(user, dict):
                raise RequestError(f"users[{i}] must be an object of raw field values, got {type(user).__name__}",
                                   field=f"users[{i}]")
            unknown = sorted(set(user) - known)
            if unknown:
                raise RequestError(f"users[{i}]: unknown field(s) {unknown}; the two models read "
                                   f"{self.user_fields} (the item table fills {self.rank_item_fields})",
                                   field=f"users[{i}].{unknown[0]}")
        return users, k, candidates

    def recall_lines(self, users: list[dict[str, Any]]) -> bytes:
        """One retrieval data line per user."""
        layout = self.recall
        lines = [layout.separator.join(layout.cell(user.get(f), f, f"users[{i}].{f}") for f in layout.fields)
                 for i, user in enumerate(users)]
        return ("\n".join(lines) + "\n").encode()

    def rank_lines(self, users: list[dict[str, Any]], candidates: np.ndarray) -> tuple[bytes, list[tuple[int, int]]]:
        """One ranking data line per (user, retrieved item) and ``(user, candidate column)`` of each line
        (``candidates``: ids ``(B, n)``, ``-1`` past the items retrieved)."""
        layout = self.rank
        lines, where = [], []
        for i, user in enumerate(users):
            base = [layout.cell(user.get(f), f, f"users[{i}].{f}") if f not in self.rank_item_fields else ""
                    for f in layout.fields]
            for j, item in enumerate(candidates[i]):
                if item < 0:
                    break
                row, values = list(base), self.items.row(item)
                for pos, column in self._item_columns:
                    row[pos] = values[column]
                lines.append(layout.separator.join(row))
                where.append((i, j))
        return ("\n".join(lines) + "\n").encode(), where

    @staticmethod
    def user_error(err: RequestError, stage: str, where: list[tuple[int, int]] | None = None,
                   candidates: np.ndarray | None = None) -> RequestError:
        """A reader's error on a generated line, re-addressed to the request's user (and candidate)."""
        message = str(err)
        match = re.match(rf"{UPLOAD_NAME}:(\d+):\s*", message)
        if match is None:
            return RequestError(f"{stage} stage: {message}", err.status)
        line = int(match.group(1)) - 1
        if where is None:
            address = f"users[{line}]"
        else:
            user, column = where[line]
            address = f"users[{user}] with candidate item {int(candidates[user, column])}"
        return RequestError(f"{address} ({stage} stage): {message[match.end():]}", err.status, field=err.field)

    @staticmethod
    def order(scores: np.ndarray, where: list[tuple[int, int]], candidates: np.ndarray, recall_scores: np.ndarray,
              k: int) -> tuple[list[list[int]], list[list[float]], list[list[float]]]:
        """Per user, the first ``k`` candidates by ranking score (ties: the retrieval order)."""
        users = len(candidates)
        per_user: list[list[tuple[float, int]]] = [[] for _ in range(users)]
        for score, (i, j) in zip(scores.tolist(), where):
            per_user[i].append((score, j))
        items, ranked, recalled = [], [], []
        for i, pairs in enumerate(per_user):
            pairs.sort(key=lambda p: (-p[0], p[1]))
            best = pairs[:k]
            items.append([int(candidates[i, j]) for _, j in best])
            ranked.append([float(s) for s, _ in best])
            recalled.append([float(recall_scores[i, j]) for _, j in best])
        return items, ranked, recalled
