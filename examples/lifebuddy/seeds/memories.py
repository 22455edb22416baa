"""What the cognitive engine remembers of each user: short texts with unit-length embeddings of the
column's dimension (768, Ollama's nomic-embed-text), searched by cosine distance through the HNSW index."""

from dbkit.seed import seeder

KINDS = ("reflection", "conversation", "fact", "win")


@seeder("memories", columns=("id", "user_id", "kind", "content", "embedding", "created_at"), depends_on=("users",),
        rows={"tiny": 36, "small": 5_000, "medium": 500_000, "large": 2_000_000})
def memories(ctx):
    users = ctx.ids("users")
    dim = ctx.vector_dim("memories", "embedding")
    sentences = ctx.pool("sentence", 2000)
    batch = 4096
    vectors, used = ctx.unit_vectors(min(batch, ctx.rows), dim), 0
    for user_id, created in zip(ctx.spread(users, ctx.rows), ctx.times(ctx.rows), strict=True):
        if used == len(vectors):
            vectors, used = ctx.unit_vectors(batch, dim), 0
        yield ctx.uuid(), user_id, ctx.rng.choice(KINDS), ctx.rng.choice(sentences), vectors[used], created
        used += 1
