"""Save a trained model's weights in a format that loads without unpickling code.

``save_weights(model, folder)`` accepts what an objective's ``fit`` returns:

- a ``torch.nn.Module`` -> ``model.safetensors`` (its state dict);
- a dict of arrays or tensors -> ``model.safetensors`` as given;
- an XGBoost model (``XGBClassifier`` or ``Booster``) -> ``model.json`` (XGBoost's own format);
- a fitted scikit-learn linear model (``coef_``, ``intercept_``) -> ``model.safetensors``.

Load them with ``safetensors.torch.load_file`` (or ``safetensors.numpy.load_file``), or
``xgboost.XGBClassifier().load_model(path)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def save_weights(model: Any, folder: Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model``'s weights into ``folder``; return the file. TypeError if unsupported.

    ``metadata`` (string values, such as the objective and its config as JSON) goes into the
    safetensors header, or into ``model-metadata.json`` beside an XGBoost model.
    """
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    kind = f"{type(model).__module__}.{type(model).__qualname__}"
    if isinstance(model, torch.nn.Module):
        return _save_tensors(model.state_dict(), folder, {"model": kind, **(metadata or {})})
    if isinstance(model, Mapping):
        return _save_tensors(model, folder, {"model": kind, **(metadata or {})})
    if type(model).__module__.startswith("xgboost"):
        path = folder / "model.json"
        model.save_model(str(path))
        (folder / "model-metadata.json").write_text(
            json.dumps({"model": kind, **(metadata or {})}, indent=2) + "\n")
        return path
    if hasattr(model, "coef_") and hasattr(model, "intercept_"):
        arrays = {"coef": model.coef_, "intercept": np.atleast_1d(model.intercept_)}
        if hasattr(model, "classes_"):
            arrays["classes"] = np.asarray(model.classes_)
        return _save_tensors(arrays, folder, {"model": kind, **(metadata or {})})
    raise TypeError(f"cannot save weights of a {kind}; return a torch module, a dict of arrays, "
                    "an XGBoost model or a fitted sklearn linear model from fit()")


def _save_tensors(tensors: Mapping[str, Any], folder: Path, metadata: dict[str, str]) -> Path:
    import torch
    from safetensors.torch import save_file

    plain = {}
    for name, value in tensors.items():
        tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
        plain[name] = tensor.detach().cpu().clone().contiguous()  # clone: no shared storage
    path = folder / "model.safetensors"
    save_file(plain, str(path), metadata=metadata)
    return path
