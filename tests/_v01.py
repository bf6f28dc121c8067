"""What tests/fixtures/v0.1/make_fixtures.py recorded of each saved value, recomputed today: the helpers the
tests of interp 0.1's saved files share (lens, features, induction)."""

from __future__ import annotations

import json
import math
from typing import Any

import torch


def summarize(t: torch.Tensor) -> dict[str, Any]:
    """Shape, dtype, sum (NaN-skipping, 4 decimals), NaN count and the first 4 non-NaN values (6 decimals):
    the summary the v0.1 fixture generator recorded in expected.json."""
    t = t.detach().cpu()
    if t.is_floating_point():
        d = t.double()
        nan = torch.isnan(d)
        finite = d[~nan].flatten()
        return {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
                "sum": round(float(finite.sum()), 4), "nan_count": int(nan.sum()),
                "first": [round(float(x), 6) for x in finite[:4].tolist()]}
    flat = t.flatten().long()
    return {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "sum": int(flat.sum()),
            "nan_count": 0, "first": [int(x) for x in flat[:4].tolist()]}


def normalize(v: Any) -> Any:
    """JSON-normal form (tuples -> lists, dict keys -> str, NaN -> "NaN", dtypes -> str)."""
    def fix(x: Any) -> Any:
        if isinstance(x, float) and math.isnan(x):
            return "NaN"
        if isinstance(x, (list, tuple)):
            return [fix(y) for y in x]
        if isinstance(x, dict):
            return {str(k): fix(y) for k, y in x.items()}
        if isinstance(x, torch.dtype):
            return str(x)
        return x
    return json.loads(json.dumps(fix(v)))
