from alpaca_broker.cli import main

raise SystemExit(main())
