"""``python -m datastream_client``: the datastream CLI."""

import sys

from datastream_client.cli import main

sys.exit(main())
