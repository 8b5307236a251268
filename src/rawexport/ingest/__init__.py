"""Ingest: events in, validated, stamped and made durable.

`collectors` decodes the HTTP collectors' bodies (`trackerpb`: the tracker's protobuf),
`validate` checks events per data type and builds store tables, `group_commit` makes
batches durable together, `files` reads event files for import. (Synthetic events for the
demo and benches are `rawexport.demo`: they bypass ingest.)
"""
