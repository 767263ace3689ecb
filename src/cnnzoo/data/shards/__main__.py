"""``python -m cnnzoo.data.shards --src ROOT --dst SHARDS``: write shards."""

import logging
import sys

from cnnzoo.data.shards.write import main

logging.basicConfig(level=logging.INFO, format="%(message)s")
sys.exit(main())
