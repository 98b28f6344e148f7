"""Alembic environment for the gateway store, driven by :func:`federation.store.upgrade`.

The caller passes an open connection in ``config.attributes["connection"]`` (inside its
own transaction, so the whole upgrade commits or rolls back at once). For ad-hoc use
(``alembic -x url=… revision --autogenerate``) a URL may be given instead.
"""

from __future__ import annotations

from alembic import context

from federation.store.database import make_engine
from federation.store.models import metadata


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER much
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("pass the database with -x url=sqlite:///gateway.db")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported for the gateway store")
run_migrations_online()
