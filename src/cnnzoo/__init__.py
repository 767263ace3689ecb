"""cnnzoo: the classic ImageNet convnets as reproducible Lightning + Hydra experiments."""

__version__ = "0.1.0"


def _register_resolvers() -> None:  # ${unique_dir:...} and ${sweep_group:} in conf/
    from cnnzoo.tasks.runs import register_resolvers

    register_resolvers()


_register_resolvers()
