"""The client side: `client` speaks GrowingIO's export API (rawexport or GrowingIO itself),
`pull` downloads exports verified and resumable, `load` turns them into Parquet / DuckDB.
"""
