"""The command line: parse flags into typed settings, run one subcommand, and turn every way it
can end into an exit status and at most one line. The entry point, ``search.cli``, loads this
folder only after checking what makes every command impossible."""
