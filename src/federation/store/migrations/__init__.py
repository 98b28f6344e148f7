"""Alembic migrations of the gateway store (run them with ``federation db upgrade``)."""
