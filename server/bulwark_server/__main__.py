from bulwark_server.cli import main

raise SystemExit(main())
