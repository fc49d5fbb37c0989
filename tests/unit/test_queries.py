"""The named-query files parse into the statements the package runs, one loader for all."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from outbox_relay.db.queries import QUERIES, load, parse, psycopg_form
from outbox_relay.write import asyncpg as write_asyncpg
from outbox_relay.write import psycopg as write_psycopg

DB = Path(__file__).resolve().parents[2] / "outbox_relay" / "db"


def test_all_relay_statements_are_present() -> None:
    assert {"claim", "record_outcomes", "requeue_dead", "summary", "recent_dead_letters"} <= set(
        QUERIES
    )
    assert "FOR UPDATE SKIP LOCKED" in QUERIES["claim"]
    assert not any(
        line.lstrip().startswith("--") for q in QUERIES.values() for line in q.splitlines()
    )


def test_every_sql_file_of_the_package_but_the_schema_is_loaded() -> None:
    files = {path.name for path in DB.glob("*.sql")} - {"schema.sql"}
    assert {"queries.sql", "write.sql", "migrate.sql", "demo.sql"} <= files
    for name in files:
        names = parse((DB / name).read_text(encoding="utf-8"), name)
        assert names, f"{name} holds no named query"
        assert {key: QUERIES[key] for key in names} == names


def test_parse_rejects_a_repeated_name() -> None:
    with pytest.raises(ValueError, match="used twice"):
        parse("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")


def test_load_rejects_a_name_used_in_two_files(tmp_path: Path) -> None:
    (tmp_path / "one.sql").write_text("-- name: a\nSELECT 1;\n")
    (tmp_path / "two.sql").write_text("-- name: a\nSELECT 2;\n")
    with pytest.raises(ValueError, match=r"two.sql: the name 'a' is already used in one.sql"):
        load(tmp_path)


def test_load_leaves_the_schema_out(tmp_path: Path) -> None:
    (tmp_path / "one.sql").write_text("-- name: a\nSELECT 1;\n")
    (tmp_path / "schema.sql").write_text("-- name: b\nCREATE TABLE t ();\n")
    assert load(tmp_path) == {"a": "SELECT 1"}


def test_both_drivers_send_the_same_enqueue_text() -> None:
    for asyncpg_sql, psycopg_sql in [
        (write_asyncpg.ENQUEUE_TRACK_SQL, write_psycopg.ENQUEUE_TRACK_SQL),
        (write_asyncpg.ENQUEUE_ALBUM_SQL, write_psycopg.ENQUEUE_ALBUM_SQL),
    ]:
        assert psycopg_sql == psycopg_form(asyncpg_sql)
        assert asyncpg_sql.startswith("SELECT outbox.enqueue_")
    assert write_psycopg.ENQUEUE_ALBUM_SQL == (
        "SELECT outbox.enqueue_album(%s::text, %s::text, %s::text::jsonb, %s::text)"
    )


def test_psycopg_form_replaces_parameters_in_order_and_doubles_percent_signs() -> None:
    assert psycopg_form("SELECT $1::int, $2 WHERE a LIKE '5%'") == (
        "SELECT %s::int, %s WHERE a LIKE '5%%'"
    )
    assert psycopg_form("SELECT 1") == "SELECT 1"


@pytest.mark.parametrize("sql", ["SELECT $2, $1", "SELECT $1, $1", "SELECT $1, $3"])
def test_psycopg_form_refuses_what_has_no_positional_form(sql: str) -> None:
    with pytest.raises(ValueError, match="no positional psycopg form"):
        psycopg_form(sql)


_SQL_START = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|ALTER|DROP|LISTEN)\s")


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes of ``tree`` (usage examples there may show SQL)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            found.add(id(body[0].value))
    return found


def test_product_modules_hold_no_sql_in_python_strings() -> None:
    """STYLE.md habit 1: SQL lives in .sql files (the test equipment is not product code)."""
    package = DB.parent
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if "testing" in path.relative_to(package).parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and _SQL_START.match(node.value)
            ):
                offenders.append(f"{path.relative_to(package.parent)}:{node.lineno}")
    assert offenders == [], "move these statements into a .sql file of outbox_relay/db"
