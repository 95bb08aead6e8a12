"""The `tinygpt` subcommands, grouped by concern: each module adds its commands' flags to the
parser (`add_*_command`) and holds the handlers that run them (`run_*`). `tinygpt.cli` puts
them together and turns every user error into one line."""
