"""Code the tests share, by topic; test modules import from here, never from ``conftest`` or each other.

- ``paths``: the checkout's folders and the small data shipped with the tests.
- ``configs``: tiny configs for fits of a few steps, and ``write_config``.
- ``datasets``: writers of tiny on-disk datasets in the layouts torchvision and ``lit_gen.data`` read.
- ``runners``: ``python -m lit_gen`` in-process or in a fresh interpreter, and what Lightning logs meanwhile.
- ``callbacks``: callbacks the test configs name by class path (``helpers.callbacks.Gate``), also in subprocesses.
- ``runs``: what a fit leaves in its run directory: run folders, checkpoints compared bitwise, CSV rows.
- ``wandb_runs``: the records of offline W&B runs.
- ``slurm``: the test SLURM cluster and watching its jobs.
- ``ddp``: 2-process DDP fits launched side by side, the single-process fits they are compared with, the checks.
- ``diffusion``: Gaussian paths the diffusion tests' configs name (``helpers.diffusion.RankShardedOT``).
"""
