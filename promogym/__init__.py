"""promogym: a reinforcement-learning simulator for e-commerce pricing and promotions.

One namespace over the project's layers, each importing only from the layers below it:

``promogym.core`` (validated configs, atomic I/O) → ``promogym.envs.market`` (the ground-truth world) →
``promogym.predictors`` (response models and their registry; the Hillstrom data) → ``promogym.envs`` (the
Gymnasium environments and their families) → ``promogym.agents`` (policies and their registry, training,
oracles) → ``promogym.experiments`` (the pipeline engine, statistics, reports) → the ``promogym`` command
line (``promogym.experiments.cli``).

``import promogym.envs`` registers the Gymnasium ids ``promogym/...``.
"""

__version__ = "0.1.0"
