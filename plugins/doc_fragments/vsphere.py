"""Documentation of the vSphere connection options (mirrors argument_spec.vsphere_argument_spec)."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
requirements:
  - pyvmomi >= 8.0.1
options:
  hostname:
    description:
      - The vCenter or ESXi server that runs the source VM.
      - If not set, the value of the E(VMWARE_HOST) environment variable is used.
    type: str
    required: true
  username:
    description:
      - The user to log in to O(hostname) as.
      - If not set, the value of the E(VMWARE_USER) environment variable is used.
    type: str
    required: true
    aliases: [user]
  password:
    description:
      - The password of O(username). Never logged, never passed on a command line.
      - If not set, the value of the E(VMWARE_PASSWORD) environment variable is used.
      - Ansible writes a task's arguments into a file on the host that runs the module when the task runs
        under C(async) (as every role of this collection does), and keeps it there until the job ends. On
        conversion hosts use O(password_file) instead.
      - One of O(password) and O(password_file) is required.
    type: str
    aliases: [pass, pwd]
  password_file:
    description:
      - A file on the host that runs the module (the conversion host) whose first line is the password of
        O(username). It must belong to the user the module runs as and be readable by nobody else (mode 0600
        or 0400); it is read when the module connects, and the password never travels in the arguments.
      - Mutually exclusive with O(password).
    type: path
  port:
    description:
      - The HTTPS port of O(hostname).
      - If not set, the value of the E(VMWARE_PORT) environment variable is used.
    type: int
    default: 443
  vcenter_validate_certs:
    description:
      - Whether to verify the TLS certificate of O(hostname). Turn off only in labs.
      - If not set, the value of the E(VMWARE_VALIDATE_CERTS) environment variable is used.
      - Not C(validate_certs), which openstack.cloud's modules read as the cloud's; a defaults dict shared by
        both would otherwise set vCenter's check too. The alias C(validate_certs) is deprecated and goes in 0.2.0.
    type: bool
    default: true
    aliases: [validate_certs]
"""
