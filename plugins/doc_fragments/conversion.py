"""Documentation of the guest conversion option (mirrors argument_spec.conversion_argument_spec)."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
requirements:
  - virt-v2v-in-place and virt-customize (unless conversion.skip)
  - QEMU, for libguestfs and the boot check
options:
  conversion:
    description:
      - Guest conversion with virt-v2v-in-place.
    type: dict
    default: {}
    suboptions:
      skip:
        description: Do not convert (the guest already has virtio drivers, or is converted some other way).
        type: bool
        default: false
      run_scripts:
        description: Scripts run inside the guest right after the conversion (C(virt-customize --run)).
        type: list
        elements: path
        default: []
      firstboot_scripts:
        description: Scripts the guest runs once at its first boot on OpenStack (C(virt-customize --firstboot)).
        type: list
        elements: path
        default: []
      timeout:
        description: Seconds the conversion may take.
        type: int
        default: 3600
      virtio_win:
        description: Path of the virtio-win drivers (ISO or directory), needed for Windows guests.
        type: path
      virt_tools:
        description:
          - Directory holding C(rhsrvany.exe) or C(pvvxsvc.exe), the service that runs a Windows guest's first-boot
            scripts (they restore its static addresses and remove VMware Tools); virt-v2v refuses a Windows guest
            without one.
          - Fedora and RHEL ship it in the default directory; Debian and Ubuntu do not ship it (see
            docs/conversion-host.md).
        type: path
        default: /usr/share/virt-tools
"""
