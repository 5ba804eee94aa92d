import sys

from semalign.cli import main

sys.exit(main())
