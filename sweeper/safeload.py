"""Loading torch files that may come from someone else (a ``model.pt`` named by ``transfer_from``,
a trial checkpoint restored from shared storage) with ``weights_only=True``.

A torch file is a pickle, and unpickling an arbitrary file runs whatever code it names. With
``weights_only=True`` torch builds only tensors, containers, strings and numbers; a file that names
anything else is refused here in one line, before anything in it runs. Everything sweeper itself
saves with ``torch.save`` holds only those types, so its own files always load.
"""
from __future__ import annotations

import pickle
import re
import warnings

from sweeper.errors import SweeperError


class UnsafeFileError(SweeperError):
    """A torch file that could not be loaded as weights only: it names other objects, or is not a torch file."""


def load_weights(path, what: str, map_location="cpu"):
    """``torch.load(path, weights_only=True)``; one-line :class:`UnsafeFileError` naming ``what`` and
    ``path`` when the file holds anything but tensors and plain data, or is no torch file at all."""
    import torch

    try:
        with warnings.catch_warnings():  # a crafted file's pickle protocol is no news: it is refused below
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
        reason = found.group(1).split(". ")[0].strip()[:160] if found else str(err).strip().splitlines()[0][:160]
        raise UnsafeFileError(
            f"{what} {path}: refused: not a file of tensors and plain data only ({reason}); loading it otherwise "
            "could run code it holds; use a file a sweeper run saved, from a source you trust"
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise UnsafeFileError(f"{what} {path}: not a readable torch file ({reason}); point it at a file torch.save wrote") from None
