"""Full-text search over a user's conversations: their titles and their messages' text.

The indexes are migration 0004's (SQLite FTS5 tables kept by triggers, PostgreSQL GIN
indexes on ``to_tsvector('simple', …)``). A query is reduced to its words, each matched as
a prefix (results while a person types) and all of them required, so no query syntax of
either database reaches it. Hits are ranked by the database (bm25, ``ts_rank``); a
conversation's score is its best message's plus twice its title's, and it is shown with
the best message's snippet (or its highlighted title).

Snippets are made here, the same way for both databases: a window of the text around its
first match, as HTML — the text escaped, each matching word in ``<mark>…</mark>``; case and
diacritics are ignored as SQLite's index ignores them.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection

MAX_WORDS = 8
CANDIDATES = 200  # hits read per kind before grouping by conversation
SNIPPET_WIDTH = 160  # characters
TITLE_WEIGHT = 2.0

_SQLITE_MESSAGES = text(
    "SELECT m.conversation_id AS cid, m.id AS mid, -bm25(messages_fts) AS score"
    " FROM messages_fts JOIN messages m ON m.rowid = messages_fts.rowid"
    " JOIN conversations c ON c.id = m.conversation_id"
    " WHERE messages_fts MATCH :query AND c.user_id = :user"
    " ORDER BY bm25(messages_fts) LIMIT :n"
)
_SQLITE_TITLES = text(
    "SELECT c.id AS cid, -bm25(conversations_fts) AS score"
    " FROM conversations_fts JOIN conversations c ON c.rowid = conversations_fts.rowid"
    " WHERE conversations_fts MATCH :query AND c.user_id = :user"
    " ORDER BY bm25(conversations_fts) LIMIT :n"
)
_PG_MESSAGES = text(
    "SELECT m.conversation_id AS cid, m.id AS mid,"
    " ts_rank(to_tsvector('simple', m.content), q.query) AS score"
    " FROM messages m JOIN conversations c ON c.id = m.conversation_id,"
    " (SELECT to_tsquery('simple', :query) AS query) q"
    " WHERE c.user_id = :user AND to_tsvector('simple', m.content) @@ q.query"
    " ORDER BY score DESC LIMIT :n"
)
_PG_TITLES = text(
    "SELECT c.id AS cid, ts_rank(to_tsvector('simple', c.title), q.query) AS score"
    " FROM conversations c, (SELECT to_tsquery('simple', :query) AS query) q"
    " WHERE c.user_id = :user AND to_tsvector('simple', c.title) @@ q.query"
    " ORDER BY score DESC LIMIT :n"
)
_TEXTS = text("SELECT id, content FROM messages WHERE id IN :ids").bindparams(
    bindparam("ids", expanding=True)
)
_TITLES = text("SELECT id, title FROM conversations WHERE id IN :ids").bindparams(
    bindparam("ids", expanding=True)
)


@dataclass(frozen=True, slots=True)
class Hit:
    conversation_id: str
    score: float
    snippet: str  # HTML
    message_id: str | None  # the message the snippet is from (None: the title)


def words(query: str) -> list[str]:
    return re.findall(r"\w+", query.lower())[:MAX_WORDS]


async def search(conn: AsyncConnection, user_id: str, query: str, limit: int) -> list[Hit]:
    """The user's conversations that hold every word of ``query``, best first."""
    found = words(query)
    if not found:
        return []
    if conn.dialect.name == "postgresql":
        expression = " & ".join(f"{w}:*" for w in found)
        statements = (_PG_MESSAGES, _PG_TITLES)
    else:
        expression = " ".join(f'"{w}"*' for w in found)
        statements = (_SQLITE_MESSAGES, _SQLITE_TITLES)
    values: dict[str, Any] = {"query": expression, "user": user_id, "n": CANDIDATES}
    message_rows = (await conn.execute(statements[0], values)).mappings().all()
    title_rows = (await conn.execute(statements[1], values)).mappings().all()
    best: dict[str, tuple[float, str]] = {}  # conversation → its best message
    for row in message_rows:
        if row["cid"] not in best:  # rows come best first
            best[row["cid"]] = (float(row["score"]), row["mid"])
    titles = {row["cid"]: float(row["score"]) for row in title_rows}

    def score(cid: str) -> float:
        return (best[cid][0] if cid in best else 0.0) + TITLE_WEIGHT * titles.get(cid, 0.0)

    ranked = sorted(best.keys() | titles.keys(), key=lambda cid: (-score(cid), cid))[:limit]
    shown = [best[cid][1] for cid in ranked if cid in best]
    untitled = [cid for cid in ranked if cid not in best]
    texts: dict[str, str] = {}
    if shown:
        texts.update((row[0], row[1]) for row in await conn.execute(_TEXTS, {"ids": shown}))
    if untitled:
        texts.update((row[0], row[1]) for row in await conn.execute(_TITLES, {"ids": untitled}))
    hits = []
    for cid in ranked:
        message_id = best[cid][1] if cid in best else None
        shown_text = texts.get(message_id if message_id is not None else cid, "")
        hits.append(Hit(cid, score(cid), snippet(shown_text, found), message_id))
    return hits


def _fold(text: str) -> str:
    """``text`` lower-cased and without diacritics, character for character (the same
    length, so positions in it are positions in ``text``)."""
    return "".join((unicodedata.normalize("NFKD", ch)[:1] or ch).lower()[:1] for ch in text)


def snippet(text: str, found: list[str], width: int = SNIPPET_WIDTH) -> str:
    """HTML: about ``width`` characters of ``text`` around its first match, escaped, each
    word that starts with one of ``found`` in ``<mark>``."""
    folded = _fold(text)
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(_fold(w)) for w in found) + r")\w*")
    matches = list(pattern.finditer(folded))
    first = matches[0].start() if matches else 0
    start = max(0, first - width // 3)
    if start > 0:  # begin at a word
        space = text.find(" ", start, first)
        start = space + 1 if space >= 0 else start
    end = min(len(text), start + width)
    if end < len(text):
        space = text.rfind(" ", max(first, start), end)
        end = space if space > first else end
    out = ["…" if start > 0 else ""]
    position = start
    for match in matches:
        if match.end() <= start or match.start() >= end:
            continue
        out.append(html.escape(text[position : match.start()], quote=False))
        out.append(
            "<mark>" + html.escape(text[match.start() : match.end()], quote=False) + "</mark>"
        )
        position = match.end()
    out.append(html.escape(text[position:end], quote=False))
    out.append("…" if end < len(text) else "")
    return " ".join("".join(out).split())
