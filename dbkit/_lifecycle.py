"""Flows that cross features: an application's restore (backup + the role model + the migration
check).  The features (migrate, seed, roles, rls, backup) do not import each other for these; this
module, above them, wires them together.  ``dbkit reset`` (:mod:`dbkit._reset`) and ``dbkit check``
(:mod:`dbkit._health`) are flows of the same layer.
"""

from __future__ import annotations

from typing import Any


def restore_hooks(settings, *, keep_server_roles: bool = False):
    """What a restore of this project asks of the other features.  ``keep_server_roles`` (a rehearsal's copy):
    roles the backup needs and the server lacks are not created (:class:`~dbkit.errors.Refused`)."""
    from dbkit.backup._pipeline import RestoreHooks

    def create_roles(admin, missing: list[str]) -> None:
        from dbkit import roles

        if keep_server_roles:
            from dbkit.errors import Refused

            raise Refused(f"the backup needs roles this server lacks ({', '.join(missing)}): a rehearsal changes "
                          "no role of the server, which every database of it shares",
                          hint="rehearse with --change-roles (a rehearsal server), or run `dbkit roles apply` first")
        if set(missing) <= set(roles.model(settings).names()):  # the role model's roles: create them
            roles.apply(settings, admin)

    def check_migrations(restored_settings) -> str | None:
        if not (restored_settings.migrations_dir / "env.py").is_file():
            return None
        from dbkit.migrate import _runner as runner

        check = runner.check(restored_settings)
        if check.problem:  # another project's database, or a version table the settings do not name
            return f"not clean: {check.problem}"
        if check.clean:
            return "clean"
        return (f"{len(check.pending)} pending, {len(check.schema_diffs or [])} schema diffs, "
                f"{len(check.edited)} edited revisions")

    return RestoreHooks(create_roles=create_roles, check_migrations=check_migrations)


def restore(settings, backup_id: str = "latest", *, keep_server_roles: bool = False, **options: Any):
    """:func:`dbkit.backup._pipeline.restore` with the project's roles created when missing (unless
    ``keep_server_roles``) and its migrations checked on the restored database (``RestoreResult.migrate_check``)."""
    from dbkit.backup import _pipeline as pipeline

    return pipeline.restore(settings, backup_id, hooks=restore_hooks(settings, keep_server_roles=keep_server_roles),
                            **options)


def verify(settings, backup_id: str = "latest", **options: Any):
    """:func:`dbkit.backup._pipeline.verify`; its restore test restores as :func:`restore` does."""
    from dbkit.backup import _pipeline as pipeline

    return pipeline.verify(settings, backup_id, hooks=restore_hooks(settings), **options)
