"""Audit log rows: who did what to which document (ids come from the identity column), over the
window (``ctx.window``) ending at the run's anchor (``ctx.anchor``, "now" by default)."""

from dbkit.seed import seeder

ACTIONS = ("document.create", "document.update", "document.share", "user.login")


@seeder("audit_log", columns=("tenant_id", "actor_id", "action", "target_table", "target_id", "at"),
        depends_on=("documents",), rows={"tiny": 24, "small": 2_000, "medium": 50_000, "large": 500_000})
def audit_log(ctx):
    docs = ctx.fetch("documents", "id", "tenant_id", "author_id")
    times = ctx.times(ctx.rows)
    for i in range(ctx.rows):
        doc_id, tenant_id, author_id = docs[ctx.rng.randrange(len(docs))]
        yield tenant_id, author_id, ctx.rng.choice(ACTIONS), "documents", doc_id, times[i]
