"""``dbkit seed``: deterministic, FK-consistent, fast fake data (Faker pools + binary COPY).

Seed definitions live in the project's ``seeds/`` folder; see :func:`seeder`.
"""

from dbkit.seed._registry import PROFILES, seeder

__all__ = ["PROFILES", "seeder"]
