"""The command line: parse flags into typed settings, run one subcommand, and turn every way it
can end into an exit status and at most one line. The only layer that imports the project
lazily, with the entry point ``search.cli``, which loads the rest only after checking what
makes every command impossible; ``commands`` imports a subcommand's library when it runs."""
