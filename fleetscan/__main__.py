from fleetscan._commands import main

raise SystemExit(main())
