"""Full-text search over conversation titles and message text.

SQLite: two FTS5 tables whose content is the ``messages`` and ``conversations`` tables
(external content: the text is not stored twice), kept in step by triggers, and rebuilt
here from the rows already there. PostgreSQL: GIN indexes on ``to_tsvector('simple', …)``
of the same columns, which ``CREATE INDEX`` builds from the rows already there. Both
tokenize language-neutrally (no stemming), so a word is found in any language.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# (the FTS table, the table it indexes, the indexed column)
INDEXED = (("messages_fts", "messages", "content"), ("conversations_fts", "conversations", "title"))


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for fts, table, column in INDEXED:
            op.execute(
                f"CREATE VIRTUAL TABLE {fts} USING fts5({column}, content='{table}', "
                f"content_rowid='rowid', tokenize='unicode61 remove_diacritics 2')"
            )
            op.execute(
                f"CREATE TRIGGER {fts}_insert AFTER INSERT ON {table} BEGIN "
                f"INSERT INTO {fts}(rowid, {column}) VALUES (new.rowid, new.{column}); END"
            )
            op.execute(
                f"CREATE TRIGGER {fts}_delete AFTER DELETE ON {table} BEGIN "
                f"INSERT INTO {fts}({fts}, rowid, {column}) "
                f"VALUES ('delete', old.rowid, old.{column}); END"
            )
            op.execute(
                f"CREATE TRIGGER {fts}_update AFTER UPDATE OF {column} ON {table} BEGIN "
                f"INSERT INTO {fts}({fts}, rowid, {column}) "
                f"VALUES ('delete', old.rowid, old.{column}); "
                f"INSERT INTO {fts}(rowid, {column}) VALUES (new.rowid, new.{column}); END"
            )
            op.execute(f"INSERT INTO {fts}({fts}) VALUES ('rebuild')")
    else:
        for _, table, column in INDEXED:
            op.execute(
                f"CREATE INDEX ix_{table}_search ON {table} "
                f"USING gin (to_tsvector('simple', {column}))"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for fts, _, _ in INDEXED:
            for event in ("insert", "delete", "update"):
                op.execute(f"DROP TRIGGER IF EXISTS {fts}_{event}")
            op.execute(f"DROP TABLE IF EXISTS {fts}")
    else:
        for _, table, _ in INDEXED:
            op.execute(f"DROP INDEX IF EXISTS ix_{table}_search")
