"""Documentation of the OpenStack connection options (mirrors argument_spec.openstack_argument_spec)."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
requirements:
  - openstacksdk >= 1.0.0
options:
  cloud:
    description:
      - The name of a cloud in C(clouds.yaml) that holds the target project.
      - With neither O(cloud) nor O(auth), E(OS_CLOUD) or the E(OS_*) environment variables are used.
      - Unlike openstack.cloud, not a dict - a cloud given inline goes in O(auth), O(auth_type) and O(region_name),
        where the secrets are masked; a dict here would reach the host's log of the module's arguments unmasked.
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
  client_cert:
    description:
      - A client certificate (PEM) for clouds that require one, on the host that runs the module.
    type: path
    aliases: [cert]
  client_key:
    description:
      - The private key of O(client_cert), when not in the same file.
    type: path
    aliases: [key]
  interface:
    description:
      - Which endpoints of the catalog to use - C(internal) for a conversion host inside the cloud's network.
    type: str
    choices: [public, internal, admin]
    aliases: [endpoint_type]
  api_timeout:
    description:
      - Seconds to wait for one API call (180 when not set).
    type: int
"""
