"""Every worker role walstress knows, one registration line each.

A new role is one module (its settings dataclass, its actor and
``ROLE = Role(...)``, see ``base.py``) plus one line below. A role defined
outside walstress is registered the same way, with :func:`register_role`
called before the scenario is loaded; its worker processes import the
actor from the module (or file) that defines it.
"""

from __future__ import annotations

from walstress.settings import Registry
from walstress.workers import checkpointer, ddl, opener, python, reader, sql, walrace, writer
from walstress.workers.base import Role

ROLES: Registry[Role] = Registry("role")


def register_role(role: Role) -> Role:
    return ROLES.register(role.name, role)


register_role(writer.ROLE)
register_role(reader.ROLE)
register_role(checkpointer.ROLE)
register_role(opener.ROLE)
register_role(walrace.ROLE)
register_role(python.ROLE)
register_role(sql.ROLE)
register_role(ddl.SCHEMA_ROLE)
register_role(ddl.MODE_ROLE)
