from pathlib import Path

import pytest

from watcher.config import (
    ConfigError,
    Overrides,
    build_settings,
    database_url_from_env,
    parse_host_port,
    redact_conninfo,
    secrets_to_hide,
)


def test_database_url_wins_over_db_variables() -> None:
    env = {"DATABASE_URL": "postgresql://u:pw@db:5433/x", "DB_HOST": "other"}
    assert database_url_from_env(env) == "postgresql://u:pw@db:5433/x"


def test_db_variables_build_a_connection_string() -> None:
    url = database_url_from_env(
        {"DB_HOST": "db", "DB_PORT": "6543", "DB_NAME": "w", "DB_USER": "me", "DB_PASSWORD": "s3cret"}
    )
    assert url is not None
    for part in ("host=db", "port=6543", "dbname=w", "user=me", "password=s3cret"):
        assert part in url


def test_no_database_settings_means_embedded() -> None:
    assert database_url_from_env({}) is None
    settings = build_settings(Overrides(), env={})
    assert settings.database_url is None
    assert settings.redacted_database().startswith("embedded:")


def test_bad_values_are_configuration_errors() -> None:
    with pytest.raises(ConfigError):
        database_url_from_env({"DB_PORT": "fifty"})
    with pytest.raises(ConfigError):
        build_settings(Overrides(), env={"WEARABLE_DEBOUNCE_SECONDS": "soon"})
    with pytest.raises(ConfigError):
        parse_host_port("9108")
    with pytest.raises(ConfigError):
        database_url_from_env({"DATABASE_URL": "postgresql://[broken"})


def test_flags_win_over_environment_and_old_names_still_work() -> None:
    env = {"PIPELINE_DATA_DIR": "/srv/lake", "WEARABLE_METRICS_ADDR": "0.0.0.0:9999"}
    settings = build_settings(Overrides(), env=env)
    assert str(settings.data_dir) == "/srv/lake"
    assert settings.metrics_addr == ("0.0.0.0", 9999)
    settings = build_settings(Overrides(data_dir="/x", metrics_addr="[::1]:9108", no_dbt=True), env=env)
    assert str(settings.data_dir) == "/x" and settings.metrics_addr == ("::1", 9108) and not settings.run_dbt
    assert build_settings(Overrides(metrics_addr="off"), env={}).metrics_addr is None


def test_passwords_are_never_in_the_redacted_form() -> None:
    url = "postgresql://app:p%40ss;word@db.example:5432/wear?sslmode=require"
    assert redact_conninfo(url) == "db.example:5432/wear"
    settings = build_settings(Overrides(database_url=url), env={"DB_PASSWORD": "other-secret"})
    hidden = secrets_to_hide(settings, env={"DB_PASSWORD": "other-secret"})
    assert "p@ss;word" in hidden and "other-secret" in hidden


def test_dbt_tests_run_after_the_models_unless_set_to_gate() -> None:
    assert build_settings(Overrides(), env={}).dbt_tests == "after"
    assert build_settings(Overrides(), env={"WEARABLE_DBT_TESTS": ""}).dbt_tests == "after"
    assert build_settings(Overrides(), env={"WEARABLE_DBT_TESTS": " Gate "}).dbt_tests == "gate"
    with pytest.raises(ConfigError, match="WEARABLE_DBT_TESTS must be after or gate"):
        build_settings(Overrides(), env={"WEARABLE_DBT_TESTS": "later"})


def test_the_connection_string_can_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "database_url"
    secret.write_text("postgresql://u:pw@db:5433/x\n")
    from_env = build_settings(Overrides(), env={"DATABASE_URL_FILE": str(secret)})
    assert from_env.database_url == "postgresql://u:pw@db:5433/x"
    from_flag = build_settings(Overrides(database_url_file=str(secret)), env={"DB_HOST": "other"})
    assert from_flag.database_url == "postgresql://u:pw@db:5433/x"
    assert secrets_to_hide(from_flag, env={}) == ("pw", "pw")
    # the flag wins over the environment, as every flag does
    other = tmp_path / "other_url"
    other.write_text("postgresql://v@elsewhere/y")
    both = build_settings(Overrides(database_url_file=str(other)), env={"DATABASE_URL_FILE": str(secret)})
    assert both.database_url == "postgresql://v@elsewhere/y"


def test_a_bad_connection_string_file_is_a_configuration_error_that_hides_its_content(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match="cannot read") as caught:
        build_settings(Overrides(), env={"DATABASE_URL_FILE": str(missing)})
    assert str(missing) in str(caught.value)
    unreadable = tmp_path / "a_folder"
    unreadable.mkdir()
    with pytest.raises(ConfigError, match="cannot read"):
        build_settings(Overrides(database_url_file=str(unreadable)), env={})
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        build_settings(Overrides(database_url_file=str(empty)), env={})
    garbage = tmp_path / "garbage"
    garbage.write_text("host=db password='S3cretValue\n")
    with pytest.raises(ConfigError) as caught:
        build_settings(Overrides(database_url_file=str(garbage)), env={})
    assert "S3cretValue" not in str(caught.value)
    with pytest.raises(ConfigError, match="both"):
        build_settings(
            Overrides(), env={"DATABASE_URL": "postgresql://db/x", "DATABASE_URL_FILE": str(garbage)}
        )
    with pytest.raises(ConfigError, match="both"):
        build_settings(Overrides(database_url="postgresql://db/x", database_url_file=str(garbage)), env={})


def test_a_bucket_url_is_the_landing_zone_with_its_own_poll_interval() -> None:
    settings = build_settings(Overrides(data_dir="S3://exports/fitbit/"), env={})
    assert settings.bucket_url == "s3://exports/fitbit/"
    assert settings.landing == "s3://exports/fitbit/"
    assert settings.polling_interval_seconds == 10.0  # a folder's default is 1 s
    assert not settings.allow_http
    from_env = build_settings(
        Overrides(), env={"WEARABLE_DATA_DIR": "gs://b/p", "WEARABLE_POLL_INTERVAL": "3"}
    )
    assert (from_env.bucket_url, from_env.polling_interval_seconds) == ("gs://b/p", 3.0)
    flag = build_settings(Overrides(data_dir="az://c/p", poll_interval_seconds=0.5), env={})
    assert flag.polling_interval_seconds == 0.5
    folder = build_settings(Overrides(data_dir="lake"), env={})
    assert folder.bucket_url is None and folder.polling_interval_seconds == 1.0


def test_plain_http_only_when_the_endpoint_says_http() -> None:
    def allow(env: dict[str, str], url: str = "s3://b/") -> bool:
        return build_settings(Overrides(data_dir=url), env=env).allow_http

    assert allow({"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"})
    assert not allow({"AWS_ENDPOINT_URL": "https://minio.example.com"})
    assert allow({"AWS_ENDPOINT_URL_S3": "http://minio:9000", "AWS_ENDPOINT_URL": "https://x"})
    assert not allow({"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}, "gs://b/")
    assert not build_settings(Overrides(data_dir="lake"), env={"AWS_ENDPOINT_URL": "http://x"}).allow_http
    assert allow({"GOOGLE_BASE_URL": "http://127.0.0.1:4443"}, "gs://b/")
    assert not allow({"GOOGLE_BASE_URL": "https://storage.example.com"}, "gs://b/")
    assert allow({"AZURE_STORAGE_ENDPOINT": "http://127.0.0.1:10000/devstoreaccount1"}, "az://c/")
    assert allow({"AZURITE_BLOB_STORAGE_URL": "http://127.0.0.1:10000"}, "az://c/")
    assert not allow({"AZURE_STORAGE_ENDPOINT": "https://acct.blob.core.windows.net"}, "az://c/")
    assert not allow({"GOOGLE_BASE_URL": "http://127.0.0.1:4443"}, "az://c/")


def test_a_url_that_is_no_bucket_is_a_configuration_error() -> None:
    for bad in ("ftp://host/lake", "s3://", "s3:///"):
        with pytest.raises(ConfigError):
            build_settings(Overrides(data_dir=bad), env={})
    with pytest.raises(ConfigError, match="poll interval"):
        build_settings(Overrides(data_dir="s3://b/", poll_interval_seconds=0), env={})


def test_cloud_secrets_are_hidden_for_a_bucket() -> None:
    env = {"AWS_SECRET_ACCESS_KEY": "very-secret", "AWS_SESSION_TOKEN": "tok"}
    bucket = build_settings(Overrides(data_dir="s3://b/"), env={})
    assert set(secrets_to_hide(bucket, env=env)) == {"very-secret", "tok"}
    clouds = {
        "AZURE_STORAGE_ACCESS_KEY": "az-key",
        "GOOGLE_SERVICE_ACCOUNT_KEY": "{json}",
        "AZURE_X": "shown",
    }
    assert set(secrets_to_hide(bucket, env=clouds)) == {"az-key", "{json}"}


def test_an_endpoint_that_is_no_url_is_a_configuration_error() -> None:
    for bad in ("foo", "minio:9000", "ftp://minio"):
        with pytest.raises(ConfigError, match="AWS_ENDPOINT_URL must be an http"):
            build_settings(Overrides(data_dir="s3://b/"), env={"AWS_ENDPOINT_URL": bad})
    ok = build_settings(Overrides(data_dir="s3://b/"), env={"AWS_ENDPOINT_URL": "http://minio:9000/"})
    assert ok.allow_http
    with pytest.raises(ConfigError, match="GOOGLE_BASE_URL must be an http"):
        build_settings(Overrides(data_dir="gs://b/"), env={"GOOGLE_BASE_URL": "localhost:4443"})
    with pytest.raises(ConfigError, match="AZURITE_BLOB_STORAGE_URL must be an http"):
        build_settings(Overrides(data_dir="az://c/"), env={"AZURITE_BLOB_STORAGE_URL": "127.0.0.1:10000"})


def test_an_etag_is_kept_in_its_quoted_form() -> None:
    from watcher.landing.bucket import entity_tag

    assert entity_tag("0x8DC") == '"0x8DC"'  # Azure's and GCS's listings give it bare
    assert entity_tag('"0x8DC"') == '"0x8DC"'  # their HEAD, and S3 everywhere, give it quoted
    assert entity_tag('W/"abc"') == 'W/"abc"'
    assert entity_tag(None) is None


def test_empty_cloud_variables_count_as_unset() -> None:
    from watcher.config import clear_empty_cloud_variables

    env = {"AWS_ENDPOINT_URL": "", "AWS_ACCESS_KEY_ID": " ", "AWS_REGION": "eu-west-1", "DB_HOST": ""}
    assert sorted(clear_empty_cloud_variables(env)) == ["AWS_ACCESS_KEY_ID", "AWS_ENDPOINT_URL"]
    assert env == {"AWS_REGION": "eu-west-1", "DB_HOST": ""}
