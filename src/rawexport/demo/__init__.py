"""Demo and bench data: deterministic synthetic events, written straight to the event store.

`generate` makes the events of the 10 data types for a range of Beijing hours (with the
documented joins holding), from the value pools of `samples`. It bypasses ingest (no
collector, no validation, no group commit): `rawexport demo`, `rawexport generate`, the
tests and the benchmarks use it to fill a project quickly.
"""
