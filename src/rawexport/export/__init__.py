"""Export: which hours are due, the jobs that run them, and the run itself.

`scheduler` plans closed hours; `worker` runs jobs under leases; `runner` turns an hour's
Parquet into sorted gzip CSV parts and a manifest, using `csvsql` (DuckDB queries),
`csvline` + `_csvline*.c` (the CSV dialect, in C), `rangesort` and `spill` (bounded-memory
sort), `parts` (the part writer) and `keys` (object keys); `retention` sweeps;
`actions` are the operator actions (export now, rerun, backfill).
"""
