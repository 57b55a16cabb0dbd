from etlctl.cli import main

raise SystemExit(main())
