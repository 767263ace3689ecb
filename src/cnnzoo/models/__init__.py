"""Pure torch.nn architectures behind one door: `create_model(name, ...)`, `list_models()`."""

from cnnzoo.models.registry import create_model, list_models

__all__ = ["create_model", "list_models"]
