"""Turn whatever array the caller holds (numpy, torch, nested lists) into a numpy array.

``plot`` never imports torch: a tensor is recognised by duck typing (it has ``detach``), moved
to the CPU and, when it is a reduced-precision float (bfloat16, float16), widened to float32,
since numpy has no bfloat16.

Example:
    >>> from interp.plot.arrays import as_numpy
    >>> as_numpy([[1, 2], [3, 4]]).shape
    (2, 2)
"""

from __future__ import annotations

from typing import Any, Protocol, TypeAlias, runtime_checkable

import numpy as np
import numpy.typing as npt


@runtime_checkable
class TensorLike(Protocol):
    """Anything with torch's ``detach``: a ``torch.Tensor`` without importing torch."""

    def detach(self) -> Any: ...


ArrayLike: TypeAlias = "npt.ArrayLike | TensorLike"
"""What every builder accepts for numbers: numpy arrays, torch tensors, nested sequences."""


def as_numpy(x: ArrayLike, *, ndim: int | None = None, name: str = "values") -> np.ndarray:
    """Convert ``x`` to a float64 numpy array, optionally checking its number of dimensions.

    Args:
        x: A numpy array, a torch tensor (any device or float dtype) or a nested sequence of numbers.
        ndim: When given, the number of dimensions the result must have.
        name: What ``x`` is called in the error message.

    Returns:
        A float64 array (a copy when ``x`` was a tensor).

    Raises:
        ValueError: If ``ndim`` is given and the array has another number of dimensions.

    Example:
        >>> as_numpy([1, 2, 3], ndim=1)
        array([1., 2., 3.])
        >>> as_numpy([1, 2, 3], ndim=2)
        Traceback (most recent call last):
        ...
        ValueError: values must have 2 dimensions, got shape (3,)
    """
    if isinstance(x, TensorLike) and not isinstance(x, np.ndarray):
        t = x.detach()
        if hasattr(t, "cpu"):
            t = t.cpu()
        is_float = getattr(t, "is_floating_point", None)
        if callable(is_float) and is_float():
            t = t.float()
        x = t.numpy() if hasattr(t, "numpy") else t
    arr = np.asarray(x, dtype=np.float64)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {arr.shape}")
    return arr
