"""Tasks: instantiate a run from its Hydra config, run it, write its results.

The tasks are the Hydra layer: importing them registers the resolvers that conf/ uses
(``${unique_dir:...}``, ``${sweep_group:}``, ...), so every process that runs a task can resolve
its config, also a SLURM job that unpickles one (hydra-submitit-launcher). Nothing below this
package registers anything on import.
"""

from cnnzoo.tasks.resolvers import register_resolvers

register_resolvers()
