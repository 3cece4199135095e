"""Documentation of the source-VM options (mirrors argument_spec.source_vm_argument_spec)."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  vm_name:
    description:
      - The name of the source VM. Use O(datacenter) and O(folder) when the name is not unique.
      - Exactly one of O(vm_name), O(vm_uuid) and O(vm_moref) is needed.
    type: str
  vm_uuid:
    description:
      - The instance UUID of the source VM (C(config.instanceUuid)).
    type: str
  vm_moref:
    description:
      - The managed object id of the source VM, for example C(vm-42).
    type: str
  datacenter:
    description:
      - The datacenter to look for O(vm_name) in.
    type: str
  folder:
    description:
      - The VM folder to look for O(vm_name) in, for example C(/DC0/vm/wave1).
    type: str
"""
