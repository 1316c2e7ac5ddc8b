"""``phone_of_record`` in a directory connector's policy-file section: off unless written, and
only under its own name (a misspelling must not silently leave texted codes off, or on)."""

from __future__ import annotations

import pytest

from app.connector_setup import connector_problems, read_entries
from app.connectors.entra import EntraConfig
from app.connectors.ldap import LdapConfig
from app.connectors.okta import OktaConfig
from app.connectors.registry import plugin_of
from app.policy.loader import read_located_yaml
from tests.helpers import MINIMAL_POLICY

POLICY = MINIMAL_POLICY + "connectors:\n"
SECTIONS = {
    "okta": """\
  - type: okta
    org_url: https://acme.okta.com
    api_token_env: TK_TEST_OKTA_TOKEN
""",
    "entra": """\
  - type: entra
    tenant_id: contoso.onmicrosoft.com
    client_id: 0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0
    client_secret_env: TK_TEST_ENTRA_SECRET
""",
    "ldap": """\
  - type: ldap
    flavor: ad
    url: ldaps://dc1.example.com
    bind_dn: cn=twokey,dc=example,dc=com
    bind_password_env: TK_TEST_LDAP_PASSWORD
    user_base: ou=people,dc=example,dc=com
    group_base: ou=groups,dc=example,dc=com
""",
}


@pytest.mark.parametrize("kind", sorted(SECTIONS))
def test_phone_of_record_is_off_unless_the_section_turns_it_on(kind: str) -> None:
    for written, expected in (("", False), ("    phone_of_record: true\n", True)):
        document = read_located_yaml(POLICY + SECTIONS[kind] + written, "policy.yaml")

        assert connector_problems(document) == []
        (entry,) = read_entries(document)
        config = plugin_of(kind).config.model_validate(entry.settings)
        assert isinstance(config, OktaConfig | EntraConfig | LdapConfig)
        assert config.phone_of_record is expected


@pytest.mark.parametrize("kind", sorted(SECTIONS))
def test_a_misspelt_phone_of_record_is_refused_where_it_is_written(kind: str) -> None:
    text = POLICY + SECTIONS[kind] + "    phone_of_records: true\n"

    found = [str(p) for p in connector_problems(read_located_yaml(text, "policy.yaml"))]

    line = len(text.splitlines())
    assert len(found) == 1, found
    assert found[0].startswith(f"policy.yaml:{line}:")
    assert "unknown setting 'phone_of_records'; did you mean 'phone_of_record'?" in found[0]
