"""The HTTP API (ASGI): a thin face over the catalog, ingest and blob stages.

`app` wires the routes; `auth` (/auth/token and data-call credentials), `insights` (status
and links of the v1/v2 export endpoints), `downloads`, `collect` (collector routes),
`ratelimit`, `openapi` and `access` (request metrics and log).
"""
