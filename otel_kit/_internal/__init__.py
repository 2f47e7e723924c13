"""The toolkit's internals. Importing them first sets aside the SDK variables whose bad values would make the
OpenTelemetry SDK raise as it is imported (``config.set_aside_bad_sdk_values``); they are reported with the other
settings (``load_settings``) until an ``init()`` has logged them."""

from otel_kit._internal.config import set_aside_bad_sdk_values

set_aside_bad_sdk_values(report_later=True)
