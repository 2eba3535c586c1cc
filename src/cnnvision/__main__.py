from cnnvision.cli import main

raise SystemExit(main())
