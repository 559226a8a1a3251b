"""`python -m src.worker --name worker-1`: one worker process (see src/worker/process.py)."""

from src.worker.process import main

raise SystemExit(main())
