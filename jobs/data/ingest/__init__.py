"""`busnet ingest`: raw BUS datasets in their own layouts -> one busnet dataset (jobs.data.dataset).

adapters/   one module per source layout; each finds images, masks, labels and case ids
found.py    what adapters yield: Candidate (an image to ingest), Reject, Skipped
tables.py   reading the label tables (CSV or .xlsx) that several layouts ship
encode.py   decode, validate, crop, union masks, encode: Candidate -> row or Reject
writer.py   bounded-size Parquet shards, then the split/fold columns
run.py      the orchestration: scan, encode in a thread pool, de-duplicate, split, write, publish
"""

from jobs.data.ingest.run import ingest

__all__ = ["ingest"]
