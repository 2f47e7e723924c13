"""The public surface changes only on purpose."""

import otel_kit


def test_exported_names() -> None:
    assert sorted(otel_kit.__all__) == [
        "ConfigProblem",
        "Handle",
        "MissingDependencyError",
        "Settings",
        "correlation_scope",
        "current_handle",
        "get_correlation_id",
        "init",
        "instrument_aio_pika",
        "instrument_asgi",
        "instrument_botocore",
        "instrument_fastapi",
        "instrument_flask",
        "instrument_httpx",
        "instrument_pika",
        "instrument_psycopg",
        "instrument_requests",
        "instrument_wsgi",
        "lambda_handler",
        "new_correlation_id",
        "shutdown",
        "traced",
    ]
    for name in otel_kit.__all__:
        assert getattr(otel_kit, name) is not None


def test_missing_integration_names_the_extra_to_install() -> None:
    from otel_kit.integrations import MissingDependencyError, _require

    try:
        _require("no_such_module_xyz", "fastapi")
    except MissingDependencyError as err:
        assert "pip install 'otel-kit[fastapi]'" in str(err)
    else:
        raise AssertionError("expected MissingDependencyError")
