"""Creates the benchmark's int keys in the service's database (run as ``python -m bench.seed``)."""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    """Insert every benchmark key with value 0 and consecutive revisions, once (``--print-pk KEY``: print its pk)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings_service.settings")
    import django

    django.setup()
    from django.db import transaction
    from django.utils import timezone

    from bench.common import ALL_KEYS, KEY_DESCRIPTION
    from datastream_app.models import Revision, Setting

    if argv[:1] == ["--print-pk"]:
        print(Setting.objects.get(key=argv[1]).pk)
        return 0

    if Setting.objects.filter(key__in=ALL_KEYS).exists():
        return 0
    now = timezone.now()
    with transaction.atomic():
        start = Revision.current()
        # bulk_create skips Setting.save(): give each row the revision save()
        # would have, and move the global counter past them, so hubs see no gap.
        Setting.objects.bulk_create(
            [
                Setting(
                    key=key,
                    value_type="int",
                    value=b"0",
                    description=KEY_DESCRIPTION,
                    revision=start + i + 1,
                    updated_at=now,
                )
                for i, key in enumerate(ALL_KEYS)
            ],
            batch_size=500,
        )
        Revision.objects.update_or_create(pk=1, defaults={"value": start + len(ALL_KEYS)})
    print(f"seeded {len(ALL_KEYS)} keys")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
