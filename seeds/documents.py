"""Documents (title + paragraphs; the tsvector column is generated), created over the window
ending at the run's anchor (``ctx.times``), and their chunks (sentences with unit-length
embeddings of the column's dimension)."""

from collections import defaultdict

from dbkit.seed import seeder


@seeder("documents", columns=("id", "tenant_id", "author_id", "title", "body", "created_at"),
        depends_on=("users",), rows={"tiny": 24, "small": 500, "medium": 50_000, "large": 500_000})
def documents(ctx):
    by_tenant = defaultdict(list)
    for tenant_id, user_id in ctx.fetch("users", "tenant_id", "id"):
        by_tenant[tenant_id].append(user_id)
    tenants = sorted(by_tenant)
    titles = ctx.pool("sentence", 2000)
    paragraphs = ctx.pool("paragraph", 1000)
    times = ctx.times(ctx.rows)
    for tenant_id, created in zip(ctx.spread(tenants, ctx.rows), times, strict=True):
        body = "\n\n".join(ctx.rng.choices(paragraphs, k=ctx.rng.randint(2, 5)))
        yield (ctx.uuid(), tenant_id, ctx.rng.choice(by_tenant[tenant_id]),
               ctx.rng.choice(titles).rstrip("."), body, created)


@seeder("document_chunks", columns=("id", "tenant_id", "document_id", "chunk_index", "content", "embedding"),
        depends_on=("documents",), rows={"tiny": 48, "small": 1_500, "medium": 100_000, "large": 1_000_000})
def document_chunks(ctx):
    docs = ctx.fetch("documents", "id", "tenant_id")
    dim = ctx.vector_dim("document_chunks", "embedding")
    sentences = ctx.pool("sentence", 2000)  # the same pool as the titles: made once
    # spread the chunks over the documents: every document gets at least one when there are enough
    per_doc = [0] * len(docs)
    for i in range(ctx.rows):
        per_doc[i % len(docs) if i < len(docs) else ctx.rng.randrange(len(docs))] += 1
    batch = 4096
    vectors, used = ctx.unit_vectors(min(batch, ctx.rows), dim), 0
    for (doc_id, tenant_id), n in zip(docs, per_doc, strict=True):
        for chunk_index in range(n):
            if used == len(vectors):
                vectors, used = ctx.unit_vectors(batch, dim), 0
            yield ctx.uuid(), tenant_id, doc_id, chunk_index, ctx.rng.choice(sentences), vectors[used]
            used += 1
