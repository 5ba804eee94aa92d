import sys

from semalign.study.cli import main

sys.exit(main())
