"""Configuration: file + FEDERATION_* environment, failing fast with the key's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.errors import ConfigError
from federation.settings import load_gateway_settings, load_node_settings

GATEWAY = """
grpc_listen = "0.0.0.0:6000"
heartbeat_interval_ms = 1000
[tls]
cert = "pki/gw.crt"
key = "pki/gw.key"
ca = "pki/ca.crt"
[[sites]]
id = "city-1"
name = "市第一人民医院"
tier = "city"
"""


def _write(tmp_path: Path, text: str, name: str = "gateway.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_gateway_file_with_relative_paths_and_defaults(tmp_path):
    s = load_gateway_settings(_write(tmp_path, GATEWAY), env={})
    assert s.grpc_listen == "0.0.0.0:6000"
    assert s.tls.cert == tmp_path / "pki" / "gw.crt"
    assert s.database_url == f"sqlite:///{tmp_path.as_posix()}/gateway.db"
    assert s.unreachable_after_ms == 3000            # three missed heartbeats by default
    assert s.sites[0].name == "市第一人民医院"


def test_environment_overrides_the_file(tmp_path):
    env = {"FEDERATION_DATABASE_URL": "postgresql+psycopg://db/fed",
           "FEDERATION_TLS_CERT": "/etc/fed/gw.crt", "FEDERATION_HEARTBEAT_INTERVAL_MS": "250"}
    s = load_gateway_settings(_write(tmp_path, GATEWAY), env=env)
    assert s.database_url == "postgresql+psycopg://db/fed"
    assert s.tls.cert == Path("/etc/fed/gw.crt")
    assert s.heartbeat_interval_ms == 250


@pytest.mark.parametrize(
    ("env", "text", "names"),
    [
        ({"FEDERATION_HEARTBEAT_INTERVAL_MS": "soon"}, GATEWAY, "FEDERATION_HEARTBEAT_INTERVAL_MS"),
        ({"FEDERATION_GRPC_LISTEN": "nowhere"}, GATEWAY, "grpc_listen"),
        ({}, GATEWAY.replace('cert = "pki/gw.crt"\n', ""), "FEDERATION_TLS_CERT"),
        ({}, GATEWAY.replace('tier = "city"', 'tier = "province"'), "sites[0].tier"),
        ({}, "grpc_listen = [", "not valid TOML"),
    ],
)
def test_bad_settings_name_the_key(tmp_path, env, text, names):
    with pytest.raises(ConfigError, match=names.replace("[", r"\[").replace("]", r"\]")):
        load_gateway_settings(_write(tmp_path, text), env=env)


def test_node_settings_need_a_known_source_kind(tmp_path):
    text = 'site_id = "county-a"\n[tls]\ncert="a"\nkey="b"\nca="c"\n[source]\nkind="fax"\npath="x"\n'
    with pytest.raises(ConfigError, match="source.kind"):
        load_node_settings(_write(tmp_path, text, "site.toml"), env={})


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_gateway_settings(tmp_path / "nope.toml", env={})



def test_database_url_can_come_from_a_secret_file(tmp_path):
    import pytest

    from federation.errors import ConfigError
    from federation.settings import load_gateway_settings

    secret = tmp_path / "database_url"
    secret.write_text("postgresql://federation:s3cret@db:5432/federation\n")
    config = tmp_path / "gateway.toml"
    config.write_text('database_url_file = "database_url"\n[tls]\ncert = "c"\nkey = "k"\nca = "a"\n')
    assert load_gateway_settings(config, env={}).database_url == \
        "postgresql://federation:s3cret@db:5432/federation"
    with pytest.raises(ConfigError, match="not both"):
        load_gateway_settings(config, env={"FEDERATION_DATABASE_URL": "sqlite:///x.db"})
    secret.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        load_gateway_settings(config, env={})
    with pytest.raises(ConfigError, match="cannot be read"):
        load_gateway_settings(config, env={"FEDERATION_DATABASE_URL_FILE": str(tmp_path / "no")})


@pytest.mark.parametrize(("gateway", "expected"), [
    ("10.0.0.5:50051", "10.0.0.5:50051"),
    ("10.0.0.5:50051, 10.0.0.6:50051", "10.0.0.5:50051,10.0.0.6:50051"),
    ("[fd00::5]:50051,[fd00::6]:50051", "[fd00::5]:50051,[fd00::6]:50051"),
])
def test_a_node_may_be_given_several_gateway_replicas(tmp_path, gateway, expected):
    from federation.rpc.channels import channel_target
    text = (f'site_id = "county-a"\ngateway = "{gateway}"\n[tls]\ncert="a"\nkey="b"\nca="c"\n'
            '[source]\nkind="csv"\npath="x"\n')
    settings = load_node_settings(_write(tmp_path, text, "site.toml"), env={})
    assert settings.gateway == expected
    target, balanced = channel_target(settings.gateway)
    assert balanced == ("," in expected)
    assert target.startswith(("ipv4:", "ipv6:")) == balanced


@pytest.mark.parametrize(("gateway", "words"), [
    ("gw-1.example:50051,gw-2.example:50051", "several gateways must be given as IP addresses"),
    ("10.0.0.5:50051,[fd00::6]:50051", "mix IPv4 and IPv6"),
    ("10.0.0.5:50051,", "comma-separated list"),
])
def test_a_bad_replica_list_is_refused_with_the_reason(tmp_path, gateway, words):
    text = (f'site_id = "county-a"\ngateway = "{gateway}"\n[tls]\ncert="a"\nkey="b"\nca="c"\n'
            '[source]\nkind="csv"\npath="x"\n')
    with pytest.raises(ConfigError, match="setting 'gateway'") as err:
        load_node_settings(_write(tmp_path, text, "site.toml"), env={})
    assert words in err.value.message
