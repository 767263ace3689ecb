"""cnnzoo: the classic ImageNet convnets as reproducible Lightning + Hydra experiments.

Importing the package (or ``cnnzoo.models``, ``cnnzoo.data``) registers nothing and changes
no global state; the Hydra layer, ``cnnzoo.tasks``, registers the config's resolvers.
"""

__version__ = "0.2.1"
