"""One thin module per `busnet` command: `add_arguments(parser)` and `run(args)`."""
