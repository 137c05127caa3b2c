import sys

from walstress.workers.main import main

sys.exit(main(sys.argv[1]))
