"""Run directories: creating and reading them, their checkpoints and metrics, and the sizes a
run derives from its config and data. Everything that reads a run (eval, export, serve,
finetune, compare) goes through here, never through `tinygpt.train`."""
