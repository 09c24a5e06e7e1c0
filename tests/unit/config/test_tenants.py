"""``[auth.tenants]``: tenant id -> token(s), from the file or ``MDS_AUTH_TENANTS`` (JSON),
each token by the admin token's rules, never shown in an error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from market_data_store.config import ConfigError, load_settings, redacted

LONG_A = "a-token-of-tenant-a-0123456789abcdef"
LONG_B = "b-token-of-tenant-b-0123456789abcdef"
FROM = "(from MDS_AUTH_TENANTS)"


def test_no_tenants_by_default() -> None:
    settings = load_settings({})
    assert settings.auth.tenants == {}
    assert settings.auth.resolved_tenants == {}
    assert settings.coordinator.tenant_share == 0.5


def test_the_environment_gives_a_json_object_of_one_token_or_several() -> None:
    settings = load_settings(
        {"MDS_AUTH_TENANTS": json.dumps({"desk-a": "t1", "desk.b": ["t2", "t3"]})}
    )
    assert settings.auth.resolved_tenants == {"desk-a": ("t1",), "desk.b": ("t2", "t3")}


def test_the_file_table_and_the_environment_replacing_it(tmp_path: Path) -> None:
    config = tmp_path / "tenants.toml"
    config.write_text('[auth.tenants]\nalpha = "t1"\nbeta = ["t2", "t3"]\n')
    from_file = load_settings({}, config_file=config)
    assert from_file.auth.resolved_tenants == {"alpha": ("t1",), "beta": ("t2", "t3")}
    replaced = load_settings({"MDS_AUTH_TENANTS": '{"gamma": "t4"}'}, config_file=config)
    assert replaced.auth.resolved_tenants == {"gamma": ("t4",)}
    # "{}" would turn every token check off without a word: refused
    with pytest.raises(ConfigError, match="MDS_AUTH_TENANTS is an empty object while"):
        load_settings({"MDS_AUTH_TENANTS": "{}"}, config_file=config)
    assert load_settings({"MDS_AUTH_TENANTS": "{}"}).auth.tenants == {}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('{"alpha": "secret-1', "MDS_AUTH_TENANTS: must be a JSON object; it is not valid JSON"),
        ('["secret-1"]', "MDS_AUTH_TENANTS: must be a JSON object"),
        ('"secret-1"', "MDS_AUTH_TENANTS: must be a JSON object"),
    ],
)
def test_a_variable_that_is_no_json_object_is_refused_unshown(value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({"MDS_AUTH_TENANTS": value})
    assert expected in str(refused.value)
    assert "secret-1" not in str(refused.value)


@pytest.mark.parametrize(
    ("tenants", "env", "expected"),
    [
        ({"bad id!": "secret-1"}, "dev", "auth.tenants"),
        ({"-lead": "secret-1"}, "dev", "auth.tenants"),
        ({"a" * 64: "secret-1"}, "dev", "auth.tenants"),
        ({"alpha": []}, "dev", f"auth.tenants.alpha {FROM}: has no token"),
        ({"alpha": " secret-1"}, "dev", f"auth.tenants.alpha {FROM}: must be printable ASCII"),
        ({"alpha": "sécret-1"}, "dev", "must be printable ASCII"),
        ({"alpha": "secret-1", "beta": "secret-1"}, "dev",
         f"auth.tenants.beta {FROM}: is also a token of tenant alpha"),
        ({"alpha": ["secret-1", "secret-1"]}, "dev",
         f"auth.tenants.alpha[1] {FROM}: is listed twice"),
        ({"alpha": "changeme"}, "dev", f"auth.tenants.alpha {FROM}: must not be the admin token"),
        ({"alpha": LONG_A, "beta": [LONG_B, "secret-1"]}, "production",
         f"auth.tenants.beta[1] {FROM}: env is production and the token has 8 characters"),
        ({"alpha": 7}, "dev", f"auth.tenants {FROM}: each tenant id must be letters"),
        ({"bad id!": "secret-1"}, "dev", f"auth.tenants {FROM}: each tenant id must be"),
    ],
)  # fmt: skip
def test_bad_tenants_are_refused_naming_the_tenant_never_the_token(
    tenants: dict[str, object], env: str, expected: str
) -> None:
    environ = {"MDS_AUTH_TENANTS": json.dumps(tenants), "MDS_ENV": env}
    if env == "production":
        environ["ADMIN_TOKEN"] = "admin-" + "x" * 40
    with pytest.raises(ConfigError) as refused:
        load_settings(environ)
    assert expected in str(refused.value)
    assert "secret-1" not in str(refused.value)
    assert LONG_B not in str(refused.value)


def test_production_takes_long_tokens_and_the_dump_shows_none() -> None:
    settings = load_settings(
        {
            "MDS_ENV": "production",
            "ADMIN_TOKEN": "admin-" + "x" * 40,
            "MDS_AUTH_TENANTS": json.dumps({"alpha": LONG_A, "beta": [LONG_B]}),
        }
    )
    dumped = json.dumps(redacted(settings))
    assert LONG_A not in dumped
    assert LONG_B not in dumped
    assert redacted(settings)["auth"]["tenants"] == {"alpha": "<set>", "beta": "<set>"}


@pytest.mark.parametrize("share", ["0", "-0.5", "1.5", "nan"])
def test_the_tenant_share_is_a_fraction(share: str) -> None:
    with pytest.raises(ConfigError, match=r"coordinator\.tenant_share"):
        load_settings({"MDS_COORDINATOR_TENANT_SHARE": share})
