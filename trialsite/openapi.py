"""What every operation of the API may answer besides success, written into the schema once
so clients (and the fuzzer) know: 400 bad input naming the field, 401/403 not allowed, 404 not
found or not yours, 409 a conflict with the trial's state, 429 locked out; and, for operations
that take a body, 415 when the body is not of a type the operation reads (a multipart body whose
parts cannot be parsed has no usable type)."""

ERROR_SCHEMA = {
    "type": "object",
    "description": "`detail` with a message, or field names with lists of messages.",
    "additionalProperties": True,
}
ERROR_RESPONSES = {
    "400": "The input was refused; the body names the field and why.",
    "401": "Not logged in.",
    "403": "Not allowed.",
    "404": "Not found (or at a site you have no role at).",
    "409": "Conflicts with the current state of the record.",
    "429": "Too many attempts.",
}


def add_error_responses(result, generator, request, public):
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path in result.get("paths", {}).values():
        for method, operation in path.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = operation.setdefault("responses", {})
            errors = dict(ERROR_RESPONSES)
            if "requestBody" in operation:
                errors["415"] = "The body is not of a media type this operation reads."
            for status, description in errors.items():
                responses.setdefault(
                    status,
                    {
                        "description": description,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                    },
                )
    return result
