from jetmamba.cli import main

raise SystemExit(main())
