"""Documentation of the OpenStack connection options (mirrors argument_spec.openstack_argument_spec)."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  cloud:
    description:
      - The name of a cloud in C(clouds.yaml) that holds the target project.
      - One of O(cloud) or O(auth) is needed; with neither, the E(OS_*) environment variables are used.
    type: str
  auth:
    description:
      - Credentials as in C(clouds.yaml) (C(auth_url), C(username), C(password), C(project_name), ...).
      - Never logged.
    type: dict
  auth_type:
    description:
      - The keystoneauth plugin that O(auth) is for, as in C(clouds.yaml) - C(password) when not set,
        C(v3applicationcredential) for an application credential (C(auth_url),
        C(application_credential_id), C(application_credential_secret)), C(v3token), C(v3oidcpassword), ...
    type: str
  region_name:
    description:
      - The region of the target cloud.
    type: str
  openstack_validate_certs:
    description:
      - Whether to verify the TLS certificates of the cloud's endpoints.
      - If not set, the C(verify) setting of the cloud in C(clouds.yaml) applies.
    type: bool
  ca_cert:
    description:
      - A CA bundle to verify the cloud's endpoints with.
    type: path
    aliases: [cacert]
"""
