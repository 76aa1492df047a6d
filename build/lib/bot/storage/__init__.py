"""Storage: SQLAlchemy 2 async models, the Alembic-owned schema and a small repository API."""
