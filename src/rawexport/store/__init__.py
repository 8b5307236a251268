"""The event store: partitioned Parquet per project / data type / UTC hour, and its compaction.

`events` writes and reads the partitions (durably: fsync before an ack); `compaction` merges
an hour's small files crash-safely. Ingest writes here, export reads here.
"""
