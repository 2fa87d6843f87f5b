import sys

from tftproxy.cli import main

sys.exit(main())
