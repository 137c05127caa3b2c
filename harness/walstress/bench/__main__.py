import sys

from walstress.bench.overhead import main

sys.exit(main())
