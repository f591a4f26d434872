"""`busnet ingest`: raw BUS datasets in their own layouts -> one busnet dataset (jobs.data.dataset).

adapters/   one module per source layout; each finds images, masks, labels and case ids
found.py    what adapters yield: Candidate (an image to ingest), Reject, Skipped
tables.py   reading the label tables (CSV or .xlsx) that several layouts ship
encode.py   decode, validate, crop (once), union masks, encode: Candidate -> row or Reject
metadata.py PNG/JPEG bytes without text chunks, EXIF, XMP, comments (nothing leaks into the dataset)
duplicates.py  the same decoded pixels twice: first kept, or every copy rejected when labels differ
cases.py    case integrity: mixed-label cases and their policy, the cross-split check, images per case
folds.py    predefined folds (--folds-from, BUSBench's folderK/{train,valid,test}.csv)
writer.py   bounded-size Parquet shards, then the split/fold/fold_splits columns
run.py      the orchestration: scan, encode in a thread pool, de-duplicate, split, write, publish
"""

from jobs.data.ingest.run import ingest

__all__ = ["ingest"]
