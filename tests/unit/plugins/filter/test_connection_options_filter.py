"""The connection dicts as AWX's extra_vars injectors render them, made fit for the modules."""

from ansible_collections.xms.warm_migration.plugins.filter.connection_options import connection_options


def test_the_fields_a_credential_left_unset_are_dropped_at_every_level():
    rendered = {
        "hostname": "vc.example.com",
        "password": "",
        "password_file": "/etc/xms/vc.pw",
        "port": "",
        "validate_certs": "True",
    }
    assert connection_options(rendered) == {
        "hostname": "vc.example.com",
        "password_file": "/etc/xms/vc.pw",
        "validate_certs": "True",
    }
    cloud = {"auth": {"auth_url": "https://k:5000/v3", "username": "", "application_credential_id": "ac"}, "cloud": ""}
    assert connection_options(cloud) == {"auth": {"auth_url": "https://k:5000/v3", "application_credential_id": "ac"}}


def test_nothing_given_is_an_empty_dict_so_the_environment_applies():
    assert connection_options(None) == {} and connection_options({}) == {}


def test_false_and_zero_are_values_not_gaps():
    assert connection_options({"validate_certs": False, "port": 0}) == {"validate_certs": False, "port": 0}
