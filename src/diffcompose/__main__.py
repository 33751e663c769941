from diffcompose.cli.main import main

raise SystemExit(main())
