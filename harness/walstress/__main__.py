import sys

from walstress.cli import main

sys.exit(main())
