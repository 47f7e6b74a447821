import sys

from ivr.cli import main

sys.exit(main())
