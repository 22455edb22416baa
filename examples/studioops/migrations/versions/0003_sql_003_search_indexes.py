"""003_search_indexes.sql (imported from infra/migrations/003_search_indexes.sql)

Written by `dbkit migrate import-sql`: the file's statements, in its order, in one transaction.
A database whose migrations table lists 003_search_indexes.sql (the old runner applied it) is stamped
at this revision by `dbkit migrate` and never runs it again.  The SQL file had no downgrade:
write one below before you need `dbkit migrate down` past this revision.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# where this revision came from: dbkit adopts databases whose migrations.filename lists the file
sql_file = '003_search_indexes.sql'
sql_history_table = 'migrations'
sql_history_column = 'filename'

STATEMENTS = [
    'CREATE INDEX IF NOT EXISTS idx_projects_created_at ON projects(created_at)',
    'CREATE INDEX IF NOT EXISTS idx_plans_project_id ON plans(project_id)',
    'CREATE INDEX IF NOT EXISTS idx_plan_items_plan_id ON plan_items(plan_id)',
    'CREATE INDEX IF NOT EXISTS idx_documents_project_id ON documents(project_id)',
    'CREATE INDEX IF NOT EXISTS idx_doc_chunks_document_id ON doc_chunks(document_id)',
    "CREATE INDEX IF NOT EXISTS idx_doc_chunks_text_fts ON doc_chunks USING gin(to_tsvector('english', text))",
    "CREATE INDEX IF NOT EXISTS idx_rag_documents_content_fts ON rag_documents USING gin(to_tsvector('english', content))",
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(sa.text(statement.replace(":", r"\:")))  # text() would read ":name" as a parameter


def downgrade() -> None:
    # written by the team after the import
    for index in ("idx_rag_documents_content_fts", "idx_doc_chunks_text_fts", "idx_doc_chunks_document_id",
                  "idx_documents_project_id", "idx_plan_items_plan_id", "idx_plans_project_id",
                  "idx_projects_created_at"):
        op.execute(f"DROP INDEX {index}")
