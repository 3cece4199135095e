"""The custom credential types of docs/awx/credential_types: what their injectors give the playbooks, as AWX
renders them (tests/awx_injectors.py, a test double of AWX's injection), is what the modules accept once the
playbooks' connection_options filter has dropped the fields left empty. And the cutover's survey."""

import json
from pathlib import Path

import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.xms.warm_migration.plugins.filter.connection_options import connection_options
from ansible_collections.xms.warm_migration.plugins.module_utils import argument_spec as specs
from ansible_collections.xms.warm_migration.tests.awx_injectors import credential_type, inject_extra_vars


def vsphere_params(inputs):
    rendered = inject_extra_vars(credential_type("warm_migration_vcenter"), inputs)["warm_migration_vcenter"]
    validator = ArgumentSpecValidator(specs.vsphere_argument_spec(), mutually_exclusive=specs.PASSWORD_ONE_OF,
                                      required_one_of=specs.PASSWORD_ONE_OF)  # fmt: skip
    return rendered, validator.validate(connection_options(rendered))


def cloud_params(inputs):
    rendered = inject_extra_vars(credential_type("warm_migration_cloud"), inputs)["warm_migration_cloud"]
    return rendered, ArgumentSpecValidator(specs.openstack_argument_spec()).validate(connection_options(rendered))


def test_a_vcenter_credential_with_only_the_required_fields_and_a_password_is_taken_with_the_defaults():
    rendered, result = vsphere_params({"hostname": "vc.example.com", "username": "migrator", "password": "s3cret"})
    assert rendered["port"] == "" and rendered["password_file"] == ""  # AWX renders an unset field empty
    assert not result.error_messages, result.error_messages
    assert result.validated_parameters == {
        "hostname": "vc.example.com", "username": "migrator", "password": "s3cret", "password_file": None,
        "port": 443, "vcenter_validate_certs": True,
    }  # fmt: skip


def test_a_vcenter_credential_naming_a_password_file_on_the_conversion_hosts_is_taken_without_a_password():
    _rendered, result = vsphere_params({"hostname": "vc", "username": "m", "password_file": "/etc/xms/vc.pw",
                                        "port": "8443", "insecure": True})  # fmt: skip
    assert not result.error_messages, result.error_messages
    params = result.validated_parameters
    assert (params["password"], params["password_file"], params["port"], params["vcenter_validate_certs"]) == (
        None, "/etc/xms/vc.pw", 8443, False)  # fmt: skip


def test_without_the_filter_the_rendered_vcenter_dict_is_refused():
    rendered, _result = vsphere_params({"hostname": "vc", "username": "m", "password_file": "/etc/xms/vc.pw"})
    validator = ArgumentSpecValidator(specs.vsphere_argument_spec(), mutually_exclusive=specs.PASSWORD_ONE_OF)
    errors = " ".join(validator.validate(rendered).error_messages)
    assert "port" in errors and "mutually exclusive" in errors


def test_a_cloud_credential_for_an_application_credential_gives_only_its_fields():
    rendered, result = cloud_params({"auth_url": "https://keystone:5000/v3", "auth_type": "v3applicationcredential",
                                     "application_credential_id": "ac1", "application_credential_secret": "s",
                                     "region_name": "RegionOne"})  # fmt: skip
    assert not result.error_messages, result.error_messages
    params = result.validated_parameters
    assert params["auth_type"] == "v3applicationcredential" and params["openstack_validate_certs"] is True
    assert params["auth"] == {"auth_url": "https://keystone:5000/v3", "application_credential_id": "ac1",
                              "application_credential_secret": "s"}  # fmt: skip
    assert rendered["auth"]["username"] == "" and params["cloud"] is None


def test_a_cloud_credential_for_a_password_leaves_auth_type_to_the_default():
    _rendered, result = cloud_params({"auth_url": "http://k/v3", "username": "u", "password": "p",
                                      "project_name": "p1", "user_domain_name": "Default",
                                      "project_domain_name": "Default"})  # fmt: skip
    assert not result.error_messages and result.validated_parameters["auth_type"] is None
    assert set(result.validated_parameters["auth"]) == {"auth_url", "username", "password", "project_name",
                                                        "user_domain_name", "project_domain_name"}  # fmt: skip


def test_the_cutover_survey_asks_only_for_what_the_cutover_role_takes_and_its_defaults_are_valid():
    """docs/awx/surveys/cutover.json: every variable but the wave is an option of the cutover role, and the
    answers AWX gives (its defaults, strings for a multiple choice) pass the role's argument validation."""
    root = Path(__file__).parents[2]
    survey = json.loads((root / "docs" / "awx" / "surveys" / "cutover.json").read_text())
    spec = yaml.safe_load((root / "roles" / "cutover" / "meta" / "argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]
    asked = {q["variable"]: q for q in survey["spec"]}
    assert set(asked) - {"wave"} <= set(options), set(asked) - set(options)
    answers = {v: q["default"] for v, q in asked.items() if v != "wave" and "default" in q}
    role_spec = {v: {k: o[k] for k in ("type", "choices") if k in o} for v, o in options.items() if v in answers}
    result = ArgumentSpecValidator(role_spec).validate(answers)
    assert not result.error_messages, result.error_messages
    assert result.validated_parameters["cutover_power_off_fallback"] is True
