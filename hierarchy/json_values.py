"""Conversion of results to plain JSON types, shared by the phase reports and the result files."""

import math

import numpy as np


def to_json_value(value):
    """Convert numpy scalars and arrays, tuples and non-finite floats to plain JSON types (``nan`` becomes ``None``)."""
    if isinstance(value, dict):
        return {str(key): to_json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [to_json_value(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)
