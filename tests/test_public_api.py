"""The public surface changes only on purpose."""

import inspect

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
    # and nothing else is public by accident (submodules such as ``otel_kit.testing`` are imported on their own)
    public = {
        name for name in dir(otel_kit) if not name.startswith("_") and not inspect.ismodule(getattr(otel_kit, name))
    }
    assert public == set(otel_kit.__all__)


def test_each_exported_function_has_a_docstring_and_typed_signature() -> None:
    for name in otel_kit.__all__:
        value = getattr(otel_kit, name)
        if inspect.isclass(value):
            assert value.__module__.startswith("otel_kit"), name
            continue
        assert callable(value), name
        assert inspect.getdoc(value), f"{name} has no docstring"
        hints = inspect.signature(value)
        assert hints.return_annotation is not inspect.Signature.empty, f"{name} has no return annotation"


def test_missing_integration_names_the_extra_to_install() -> None:
    from otel_kit.integrations import MissingDependencyError, _require

    try:
        _require("no_such_module_xyz", "fastapi")
    except MissingDependencyError as err:
        assert "pip install 'otel-kit[fastapi]'" in str(err)
    else:
        raise AssertionError("expected MissingDependencyError")
