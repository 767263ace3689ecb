"""``hparams_search=optuna``: Hydra's Optuna sweeper, with a study that survives interruption
(a Hydra plugin: it must live in the ``hydra_plugins`` namespace package)."""

import logging

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

log = logging.getLogger(__name__)


class StudySweeper(OptunaSweeper):
    """Hydra's Optuna sweeper where ``n_trials`` is the size of the whole study. With a
    ``storage`` (``sqlite:///optuna.db``), a study that was interrupted after k trials and
    started again with the same command runs the n_trials - k that are left, in the same
    database (Hydra's would run n_trials more). Trials that never finished (the interrupted
    one) do not count."""

    def sweep(self, arguments: list[str]) -> None:
        impl = self.sweeper
        if impl.storage:
            done = finished_trials(impl.study_name, impl.storage)
            if done:
                log.info(
                    "study %s in %s has %d finished trials of %d: running %d more",
                    impl.study_name,
                    impl.storage,
                    done,
                    impl.n_trials,
                    max(0, impl.n_trials - done),
                )
            impl.n_trials = max(0, impl.n_trials - done)
        return super().sweep(arguments)


def finished_trials(study_name: str, storage: str) -> int:
    """Finished trials (complete, pruned or failed) of a stored study; 0 when there is none."""
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # no such study yet
        return 0
    return sum(trial.state.is_finished() for trial in study.trials)
