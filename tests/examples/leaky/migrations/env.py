from dbkit.migrate.env import run

run(target_metadata=None)
