from bwbpf.search.cli import main

raise SystemExit(main())
