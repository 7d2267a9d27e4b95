"""The command line: parse flags into typed settings, run one subcommand, and turn every way it
can end into an exit status and at most one line. The only layer that imports the project
lazily: ``cli`` loads the rest only after checking what makes every command impossible, and
``commands`` imports a subcommand's library when it runs."""
