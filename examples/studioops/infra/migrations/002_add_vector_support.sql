-- infra/migrations/002_add_vector_support.sql
CREATE EXTENSION IF NOT EXISTS vector;

ALTER TABLE rag_documents
ADD COLUMN IF NOT EXISTS embedding vector(1536);

CREATE INDEX IF NOT EXISTS idx_rag_documents_embedding
ON rag_documents USING ivfflat (embedding vector_cosine_ops);
