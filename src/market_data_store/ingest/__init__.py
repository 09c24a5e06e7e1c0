"""POST /v1/bars bodies into rows, without HTTP."""
