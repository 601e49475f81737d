"""`python -m watcher` is the same as the `wearable-pipeline` command."""

import sys

from watcher.cli import main

sys.exit(main())
