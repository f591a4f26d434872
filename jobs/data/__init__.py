"""Data: synthetic scans, ingestion into the dataset format, case-level splits, the Ray Data pipeline, augmentation."""
