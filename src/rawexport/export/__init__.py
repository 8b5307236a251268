"""Export: which hours are due, the jobs that run them, and the run itself.

`scheduler` plans closed hours; `worker` runs jobs under leases; `pipeline` turns an hour's
Parquet into sorted gzip CSV parts as tasks on an executor (`runners`: this process, or
a Dask cluster through `ondask`), planned by `plan` and reading rows with `reading`, using
`csvsql` (DuckDB queries), `csvline` + `_csvline*.c` (the CSV dialect, in C), `rangesort`
and `spill` (bounded-memory sort), `parts` (the part writer) and `keys` (object keys);
`manifest` is what a commit publishes; `retention` sweeps; `actions` are the operator
actions (export now, rerun, backfill).
"""
