"""How an ingest batch's rows reach the database: a small registry of statement sets.

``executemany``: one ``INSERT``/``UPDATE`` per row through ``cursor.executemany`` (psycopg
pipelines them; SQLite's executemany is C). ``arrays`` (PostgreSQL only, the default there):
one statement per table with one array parameter per column (:mod:`.pg_arrays`). SQLite always
uses ``executemany``. Both write the same values inside the batch's one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from sqlalchemy import Connection, Table

from fleet_server.messaging import inserts, pg_arrays

#: The setting's values (``ingest_pg_statements``).
StatementsName = Literal["arrays", "executemany"]


class InsertNew(Protocol):
    def __call__(self, *, conn: Connection, table: Table, rows: list[dict[str, Any]]) -> int: ...


class UpdateRows(Protocol):
    def __call__(
        self,
        *,
        conn: Connection,
        table: Table,
        key: str,
        names: tuple[str, ...],
        rows: list[dict[str, Any]],
    ) -> None: ...


@dataclass(frozen=True)
class Statements:
    #: Insert rows unless their (device_id, seq) is stored; returns how many were new.
    insert_new: InsertNew
    #: Update rows by key, one call per set of changed columns.
    update_rows: UpdateRows


STATEMENTS: dict[StatementsName, Statements] = {
    "executemany": Statements(insert_new=inserts.insert_new, update_rows=inserts.update_rows),
    "arrays": Statements(insert_new=pg_arrays.insert_new, update_rows=pg_arrays.update_rows),
}


def statements_for(dialect: str, name: StatementsName) -> Statements:
    """The statement set ``name`` asks for, where ``dialect`` has it (SQLite: executemany)."""
    if dialect != "postgresql":
        return STATEMENTS["executemany"]
    return STATEMENTS[name]
