from bwbpf.search.command_line.cli import main

raise SystemExit(main())
