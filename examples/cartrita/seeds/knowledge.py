"""The agents' retrieval memory: chunks with unit-length embeddings of the column's dimension (1536)."""

from dbkit.seed import seeder


@seeder("knowledge_chunks", columns=("id", "user_id", "source", "content", "embedding", "created_at"),
        depends_on=("users",), rows={"tiny": 24, "small": 2_000, "medium": 100_000, "large": 1_000_000})
def knowledge_chunks(ctx):
    user_ids = ctx.ids("users")
    dim = ctx.vector_dim("knowledge_chunks", "embedding")
    sentences = ctx.pool("sentence", 2000)
    urls = ctx.pool("url", 300)
    batch = 2048
    vectors, used = ctx.unit_vectors(min(batch, ctx.rows), dim), 0
    for user_id, created in zip(ctx.spread(user_ids, ctx.rows), ctx.times(ctx.rows), strict=True):
        if used == len(vectors):
            vectors, used = ctx.unit_vectors(batch, dim), 0
        yield ctx.uuid(), user_id, ctx.rng.choice(urls), ctx.rng.choice(sentences), vectors[used], created
        used += 1
