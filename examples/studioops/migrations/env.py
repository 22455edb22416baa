from dbkit.migrate.env import run

# the schema lives in SQL (infra/migrations, imported as revisions): no SQLAlchemy models to compare
run(target_metadata=None)
