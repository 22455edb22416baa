"""PostgreSQL-aware Alembic operations, registered with Alembic's Operations API.

Importing this module (``import dbkit.migrate``) makes them available as
``op.<name>`` in revisions.  Each operation has a ``reverse()`` so that
autogenerate-style tooling and ``downgrade()`` bodies can be derived.

=========================================  ==========================================
``op.create_extension("vector")``          ``op.drop_extension("vector")``
``op.create_hypertable("events", "time")`` ``op.revert_hypertable("events")``
``op.enable_rls("documents")``             ``op.disable_rls("documents")``
``op.create_policy(...)``                  ``op.drop_policy(...)``
``op.create_index_concurrently(...)``      ``op.drop_index_concurrently(...)``
``op.create_vector_index(...)``            ``op.drop_index_concurrently(...)``
``op.grant(["SELECT"], "documents", ...)`` ``op.revoke(...)``
``op.execute_unfiltered("UPDATE …")``      (none: as ``op.execute``)
``op.apply_roles()``                       ``op.drop_roles()``
=========================================  ==========================================

TimescaleDB beyond hypertables (the community edition; policies and jobs run as the owner role):

==================================================  ==========================================
``op.enable_compression("events", ...)``            ``op.disable_compression("events")``
``op.add_compression_policy("events", "7 days")``   ``op.remove_compression_policy("events")``
``op.add_retention_policy("events", "90 days")``    ``op.remove_retention_policy("events")``
``op.add_reorder_policy("events", "idx")``          ``op.remove_reorder_policy("events")``
``op.create_continuous_aggregate(...)``             ``op.drop_continuous_aggregate(...)``
``op.add_refresh_policy("daily", ...)``             ``op.remove_refresh_policy("daily")``
``op.add_job("proc", "1 hour", job_name=...)``      ``op.delete_job("proc", job_name=...)``
==================================================  ==========================================

Extension and role statements run as the *session* user (the role that
connected), even while the migration runs as the owner role: creating an
untrusted extension such as pgvector or a role needs privileges the owner
does not have.
"""

from __future__ import annotations

from dbkit.migrate._ops_cagg import (
    AddJobOp,
    AddRefreshPolicyOp,
    CreateContinuousAggregateOp,
    DeleteJobOp,
    DropContinuousAggregateOp,
    RemoveRefreshPolicyOp,
)
from dbkit.migrate._ops_index import CreateIndexConcurrentlyOp, CreateVectorIndexOp, DropIndexConcurrentlyOp
from dbkit.migrate._ops_rls import CreatePolicyOp, DisableRLSOp, DropPolicyOp, EnableRLSOp, ExecuteUnfilteredOp
from dbkit.migrate._ops_schema import (
    ApplyRolesOp,
    CreateExtensionOp,
    CreateHypertableOp,
    DropExtensionOp,
    DropRolesOp,
    GrantOp,
    RevertHypertableOp,
    RevokeOp,
)
from dbkit.migrate._ops_timescale import (
    AddCompressionPolicyOp,
    AddReorderPolicyOp,
    AddRetentionPolicyOp,
    DisableCompressionOp,
    EnableCompressionOp,
    RemoveCompressionPolicyOp,
    RemoveReorderPolicyOp,
    RemoveRetentionPolicyOp,
)

__all__ = ["CreateExtensionOp", "DropExtensionOp", "CreateHypertableOp", "RevertHypertableOp", "EnableRLSOp",
    "DisableRLSOp", "CreatePolicyOp", "DropPolicyOp", "ExecuteUnfilteredOp", "CreateIndexConcurrentlyOp",
    "DropIndexConcurrentlyOp",
    "CreateVectorIndexOp", "GrantOp", "RevokeOp", "ApplyRolesOp", "DropRolesOp", "EnableCompressionOp",
    "DisableCompressionOp", "AddCompressionPolicyOp", "RemoveCompressionPolicyOp", "AddRetentionPolicyOp",
    "RemoveRetentionPolicyOp", "AddReorderPolicyOp", "RemoveReorderPolicyOp", "CreateContinuousAggregateOp",
    "DropContinuousAggregateOp", "AddRefreshPolicyOp", "RemoveRefreshPolicyOp", "AddJobOp", "DeleteJobOp"]

