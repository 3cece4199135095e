"""Documentation of the target options (mirrors argument_spec.target_argument_spec)."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  instance_name:
    description:
      - The name of the OpenStack instance the VM becomes. Default is the source VM's name.
    type: str
  flavor:
    description:
      - The flavor (name or id) of the instance.
      - If not set, the smallest flavor with at least the source's vCPUs and RAM is chosen
        (ties broken by disk size, then name).
    type: str
  volume_type:
    description:
      - The Cinder volume type of every volume, unless O(disk_volume_types) names another for a disk.
    type: str
  disk_volume_types:
    description:
      - Volume type per source disk, keyed by the disk's label (C(Hard disk 2)) or device key (C(2001)).
    type: dict
    default: {}
  availability_zone:
    description:
      - The compute availability zone of the instance; also the volumes' zone unless O(volume_availability_zone) is set.
    type: str
  volume_availability_zone:
    description:
      - The block-storage availability zone of the volumes.
    type: str
  network_map:
    description:
      - Where each source network's NICs go. Every NIC's source network must be mapped.
      - The NICs keep their MAC addresses.
    type: list
    elements: dict
    default: []
    suboptions:
      source:
        description: The source network or port group name.
        type: str
        required: true
      network:
        description: The target network (name or id).
        type: str
        required: true
      subnet:
        description: The target subnet (name or id), when the network has several.
        type: str
  fixed_ips:
    description:
      - Fixed IP addresses to keep, keyed by the source NIC's MAC address.
    type: dict
    default: {}
"""
