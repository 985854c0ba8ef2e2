"""The training program: config, the loop, evaluation, checkpoints, metrics, run directories, tasks."""
