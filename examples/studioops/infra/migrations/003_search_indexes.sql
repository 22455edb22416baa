-- infra/migrations/003_search_indexes.sql: what init.sql created by hand, as a migration
CREATE INDEX IF NOT EXISTS idx_projects_created_at ON projects(created_at);
CREATE INDEX IF NOT EXISTS idx_plans_project_id ON plans(project_id);
CREATE INDEX IF NOT EXISTS idx_plan_items_plan_id ON plan_items(plan_id);
CREATE INDEX IF NOT EXISTS idx_documents_project_id ON documents(project_id);
CREATE INDEX IF NOT EXISTS idx_doc_chunks_document_id ON doc_chunks(document_id);

-- Full-text search indexes
CREATE INDEX IF NOT EXISTS idx_doc_chunks_text_fts ON doc_chunks USING gin(to_tsvector('english', text));
CREATE INDEX IF NOT EXISTS idx_rag_documents_content_fts ON rag_documents USING gin(to_tsvector('english', content));
