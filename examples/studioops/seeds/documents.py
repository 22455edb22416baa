"""Seed data for documents (files in MinIO), their text chunks (full-text search) and the RAG corpus
(full-text search and pgvector embeddings of 1536 dimensions, OpenAI's text-embedding-3-small size)."""

from dbkit.seed import seeder


@seeder("documents", columns=("id", "project_id", "filename", "mime_type", "storage_path", "created_at"),
        depends_on=("projects",), rows={"tiny": 10, "small": 200, "medium": 20_000, "large": 200_000})
def documents(ctx):
    project_ids = ctx.ids("projects")
    words = ctx.pool("word", 500)
    for project_id, created in zip(ctx.spread(project_ids, ctx.rows), ctx.times(ctx.rows)):
        doc_id = ctx.uuid()
        name = f"{ctx.rng.choice(words)}-{ctx.rng.choice(words)}.pdf"
        yield (doc_id, project_id, name, "application/pdf", f"documents/projects/{project_id}/{doc_id}.pdf",
               created.replace(tzinfo=None))


@seeder("doc_chunks", columns=("id", "document_id", "chunk_index", "text"), depends_on=("documents",),
        rows={"tiny": 40, "small": 800, "medium": 80_000, "large": 800_000})
def doc_chunks(ctx):
    document_ids = ctx.ids("documents")
    paragraphs = ctx.pool("paragraph", 400)
    seen: dict = {}
    for document_id in ctx.spread(document_ids, ctx.rows):
        index = seen[document_id] = seen.get(document_id, -1) + 1
        yield ctx.uuid(), document_id, index, ctx.rng.choice(paragraphs)


@seeder("rag_documents", columns=("id", "project_id", "title", "content", "source", "created_at", "embedding"),
        depends_on=("projects",), rows={"tiny": 20, "small": 400, "medium": 5_000, "large": 20_000})
def rag_documents(ctx):
    project_ids = ctx.ids("projects")
    titles, texts = ctx.pool("catch_phrase", 300), ctx.pool("paragraph", 400)
    vectors = ctx.unit_vectors(ctx.rows, ctx.vector_dim("rag_documents", "embedding"))
    for i, (project_id, created) in enumerate(zip(ctx.spread(project_ids, ctx.rows), ctx.times(ctx.rows))):
        yield (ctx.uuid(), project_id, ctx.rng.choice(titles), ctx.rng.choice(texts),
               ctx.rng.choice(("upload", "email", "web")), created.replace(tzinfo=None), vectors[i])
