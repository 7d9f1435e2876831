import sys

from snaptastic_boot.cli import main

sys.exit(main())
