"""Creates the benchmark's int keys in the service's database (run as ``python -m bench.seed``)."""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    """Create every benchmark key with value 0, once (``--print-pk KEY``: print its pk)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings_service.settings")
    import django

    django.setup()
    from django.db import transaction

    from bench.common import ALL_KEYS, KEY_DESCRIPTION
    from datastream_app.models import Setting

    if argv[:1] == ["--print-pk"]:
        print(Setting.objects.get(key=argv[1]).pk)
        return 0

    if Setting.objects.filter(key__in=ALL_KEYS).exists():
        return 0
    # One by one through the model: each key gets its revision and history row as any new setting does.
    with transaction.atomic():
        for key in ALL_KEYS:
            Setting.objects.create(key=key, value_type="int", value=b"0", description=KEY_DESCRIPTION)
    print(f"seeded {len(ALL_KEYS)} keys")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
