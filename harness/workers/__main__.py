import sys

from harness.workers.main import main

sys.exit(main(sys.argv[1]))
