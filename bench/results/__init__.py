"""Run records and the results store."""

from bench.results.store import (
    RunRecord,
    config_hash,
    load_records,
    read_record,
    record_filename,
    records_frame,
    save_record,
    write_json_atomic,
)

__all__ = ["RunRecord", "config_hash", "load_records", "read_record", "record_filename", "records_frame",
           "save_record", "write_json_atomic"]
