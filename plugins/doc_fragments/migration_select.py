"""Documentation of the options that pick migrations from the target cloud's records."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  migration_id:
    description:
      - The id of one migration (as returned by M(xms.warm_migration.warm_migration_init)).
    type: str
  vm_uuid:
    description:
      - The instance UUID of the source VM of one migration.
    type: str
  vm_name:
    description:
      - The name of the source VM, as recorded at initialization.
    type: str
"""
