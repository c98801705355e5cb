"""Schemathesis checks of the API's own (`schemathesis.toml` loads this module).

`positive_data_acceptance` lets a schema-valid request be refused with 400, because some refusals
depend on state no schema can describe (funds, markets, assets, tick sizes). What the schema does
describe, the shape of a request, must then be exact: a request the schema allows is never refused
as malformed (`invalid`, the code of every serializer's refusal). The other 400 codes name the rule
that refused it."""

import schemathesis


@schemathesis.check
def schema_valid_request_is_never_refused_as_malformed(ctx, response, case) -> None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return  # The error shape itself is response_schema_conformance's to check.
    if error.get("code") == "invalid":
        raise AssertionError(f"The schema allows this request, the API refuses it as invalid: {error.get('fields')}")
