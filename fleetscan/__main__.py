from fleetscan._cli import main

raise SystemExit(main())
