"""Messages of the conversations (user turns and agents' answers) and the tools the agents called.

``id`` of both tables is an identity column: it is left to the database (it restarts at 1 on every seed).
"""

from dbkit.seed import seeder
from psycopg.types.json import Jsonb

AGENTS = ("supervisor", "researcher", "coder", "writer", "scheduler")
TOOLS = ("web_search", "calendar.create_event", "python.run", "knowledge.search", "email.draft")


@seeder("messages", columns=("conversation_id", "role", "content", "agent", "token_count", "created_at"),
        depends_on=("conversations",), rows={"tiny": 60, "small": 8_000, "medium": 800_000, "large": 8_000_000})
def messages(ctx):
    conversation_ids = ctx.ids("conversations")
    sentences = ctx.pool("sentence", 2000)
    for n, (conversation_id, created) in enumerate(zip(ctx.spread(conversation_ids, ctx.rows),
                                                       ctx.times(ctx.rows), strict=True)):
        answer = n % 2 == 1
        content = " ".join(ctx.rng.choices(sentences, k=ctx.rng.randint(1, 4)))
        yield (conversation_id, "assistant" if answer else "user", content,
               ctx.rng.choice(AGENTS) if answer else None, len(content.split()) * 4 // 3, created)


@seeder("tool_calls", columns=("message_id", "tool", "arguments", "result", "duration_ms", "created_at"),
        depends_on=("messages",), rows={"tiny": 20, "small": 2_000, "medium": 200_000, "large": 2_000_000})
def tool_calls(ctx):
    answers = [(i, t) for i, role, t in ctx.fetch("messages", "id", "role", "created_at") if role == "assistant"]
    words = ctx.pool("word", 500)
    for pick in ctx.sample(range(len(answers)), ctx.rows):
        message_id, created = answers[pick]
        yield (message_id, ctx.rng.choice(TOOLS), Jsonb({"query": ctx.rng.choice(words)}), Jsonb({"ok": True}),
               ctx.rng.randint(20, 4000), created)
