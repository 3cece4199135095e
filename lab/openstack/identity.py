"""Keystone side of the lab: service users and endpoints, the test projects, clouds.yaml.

Projects: ``xms-lab`` (where migrations land) and ``xms-small`` (tiny quotas, for
the quota tests). Each has a member user. ``clouds.yaml`` (mode 0600) names the
clouds ``xms-admin``, ``xms-lab`` and ``xms-small``.
"""

import os

import openstack
import yaml

AUTH_URL = "http://127.0.0.1:5000/v3"
LAB = os.path.join(os.environ.get("XMS_LAB_DIR", "/var/lib/xms-lab"), "openstack")
ENDPOINTS = {
    "volumev3": ("cinderv3", "http://127.0.0.1:8776/v3/%(project_id)s"),
    "compute": ("nova", "http://127.0.0.1:8774/v2.1"),
    "placement": ("placement", "http://127.0.0.1:8778"),
    "network": ("neutron", "http://127.0.0.1:9696"),
    "key-manager": ("barbican", "http://127.0.0.1:9311"),
}
PROJECTS = {"xms-lab": "lab-member", "xms-small": "small-member"}  # project -> that user's password


def cloud(user, password, project):
    return {
        "auth": {"auth_url": AUTH_URL, "username": user, "password": password, "project_name": project,
                 "user_domain_name": "Default", "project_domain_name": "Default"},
        "region_name": "RegionOne",
        "identity_api_version": 3,
    }  # fmt: skip


def main():
    admin_pw = os.environ["XMS_ADMIN_PW"]
    conn = openstack.connect(**cloud("admin", admin_pw, "admin")["auth"], region_name="RegionOne")
    idn = conn.identity
    service = idn.find_project("service") or idn.create_project(name="service", domain_id="default")
    roles = {name: idn.find_role(name) or idn.create_role(name=name) for name in ("admin", "service", "member")}
    for name in ("cinder", "nova", "placement", "neutron", "barbican"):
        user = idn.find_user(name) or idn.create_user(name=name, password=name, domain_id="default")
        for role in (roles["admin"], roles["service"]):
            idn.assign_project_role_to_user(service, user, role)
    for kind, (name, url) in ENDPOINTS.items():
        svc = idn.find_service(name) or idn.create_service(name=name, type=kind)
        have = {e.interface for e in idn.endpoints(service_id=svc.id)}
        for interface in {"public", "internal", "admin"} - have:
            idn.create_endpoint(service_id=svc.id, interface=interface, url=url, region_id="RegionOne")
    clouds = {"xms-admin": cloud("admin", admin_pw, "admin")}
    for project_name, password in PROJECTS.items():
        project = idn.find_project(project_name) or idn.create_project(name=project_name, domain_id="default")
        user_name = project_name + "-user"
        user = idn.find_user(user_name) or idn.create_user(name=user_name, password=password, domain_id="default")
        idn.assign_project_role_to_user(project, user, roles["member"])
        clouds[project_name] = cloud(user_name, password, project_name)
    path = os.path.join(LAB, "clouds.yaml")
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump({"clouds": clouds}, handle)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
