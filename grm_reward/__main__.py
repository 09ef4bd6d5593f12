from grm_reward.cli import main

raise SystemExit(main())
