"""What files written by older versions lack: the columns migrations added after version 1."""

from ivr.adapters.store_schema import COLUMNS, V1_CALL_COLUMNS


def later_columns() -> list[str]:
    return [c for c in COLUMNS if c != "call_id" and c not in dict(V1_CALL_COLUMNS)]
